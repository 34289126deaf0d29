"""What ood-bench knows about each OpenOOD postprocessor: which cannot run on a post-hoc
classifier and why, notes on those that run, and the ones needing OpenOOD's network wrappers,
three input channels, a differently named config or an explicit ``set_hyperparam``."""

from __future__ import annotations

# Postprocessors that need a network trained for them, or OpenOOD's anomaly-detection networks:
# running them on a plain classifier would fail (or score something else), so they are refused
# with the reason.
UNSUPPORTED: dict[str, str] = {
    "godin": "training-time method: needs a GODIN network (forward(x, inference=True, "
    "score_func=...)) trained with its decomposed confidence head",
    "conf_branch": "training-time method: needs a confidence-branch network "
    "(forward(x, return_confidence=True))",
    "mcd": "training-time method: needs a two-head MCD network (forward(x, return_double=True))",
    "rotpred": "training-time method: needs a rotation-prediction head "
    "(forward(x, return_rot_logits=True))",
    "rts": "training-time method: needs an RTS network that outputs a variance "
    "(forward(x, return_var=True))",
    "t2fnorm": "training-time method: needs a T2FNorm-trained network (forward_ood_inference)",
    "dsvdd": "training-time method: needs a Deep SVDD network and its hypersphere centre",
    "mos": "training-time method: needs a MOS network trained with grouped softmax and its "
    "group configuration (config.trainer.group_config)",
    "cutpaste": "training-time method: needs a CutPaste network returning (embedding, logits) "
    "and paired-image batches",
    "opengan": "training-time method: needs an OpenGAN discriminator trained on the features "
    "(net['netD'])",
    "draem": "anomaly detection: needs DRAEM's generative and discriminative networks "
    "(net['generative'], net['discriminative'])",
    "rd4ad": "anomaly detection: needs RD4AD's encoder, bottleneck and decoder (net['encoder'])",
    "patchcore": "anomaly detection: needs PatchCore's two-layer WideResNet features and "
    "OpenOOD's network/evaluator config, and writes ./results/patch/",
    "ssd": "training-time method (SSD's self-supervised features): OpenOOD's SSDPostprocessor "
    "fits one-cluster statistics indexed by the ID labels (IndexError for more than one class) "
    "and has no postprocess of its own (its scores would be MSP)",
    "ensemble": "needs several trained checkpoints of the same network "
    "(postprocessor_args.checkpoints), loaded with an unsafe torch.load",
    "grood": "needs a network OpenOOD can re-run layer by layer from an intermediate feature "
    "(BaseModel over the model's children), OOD validation data in setup by default "
    "(use_val_ood), and its setup reads self.dataset_name, which it never sets "
    "(AttributeError upstream)",
}
# Postprocessors that run, with what to know about them on a harness backbone.
NOTES: dict[str, str] = {
    "odin": "assumes 3 input channels: fewer are zero-padded to 3 and the network reads the real "
    "ones (exact: the padding gets no gradient)",
    "iodin": "assumes 3 input channels: fewer are zero-padded to 3 and the network reads the real "
    "ones (exact: the padding gets no gradient)",
    "mds_ensemble": "assumes 3 input channels: fewer are zero-padded to 3 and the network reads "
    "the real ones (exact); OpenOOD's default feature_type_list [mean] reads the first tap",
    "rankfeat": "ResNet only: reads layer3, layer4 and avgpool of a torchvision-style ResNet",
    "vim": "dim=null follows the ViM paper's rule on the backbone's D-d features (D/2; 512 for "
    "D=768; 1000 for D>=1500), as OpenOOD's 256 does for 512-d ResNet-18 features; the rows "
    "record it (param_dim)",
    "residual": "dim=null follows the ViM paper's rule on the backbone's D-d features (D/2; 512 "
    "for D=768; 1000 for D>=1500); OpenOOD's 512 is its ViT value (768-d); the rows record it "
    "(param_dim)",
    "cider": "post-hoc part only: k-NN on L2-normalised penultimate features (CIDER's training "
    "is not done)",
    "npos": "post-hoc part only: k-NN on L2-normalised penultimate features (NPOS's training is "
    "not done)",
    "reweightood": "post-hoc part only: Mahalanobis on L2-normalised penultimate features "
    "(ReweightOOD's training is not done)",
    "dropout": "equals MSP unless the backbone applies dropout in eval mode (OpenOOD's "
    "DropoutNet does)",
    "temp_scaling": "fits a temperature on the calib split (LBFGS), then MSP",
    "adascale_a": "default hyperparameters applied through set_hyperparam (see WORKAROUND)",
    "adascale_l": "default hyperparameters applied through set_hyperparam (see WORKAROUND)",
}
# OpenOOD defaults that assume the features of one network: postprocessor -> argument -> what
# the YAML's value is for. With the argument null the adapter applies the rule instead
# (ood_bench.detectors.base.vim_principal_dim on the backbone's feature dimension).
SCALED_DEFAULTS: dict[str, dict[str, str]] = {
    "vim": {"dim": "512-d ResNet-18 features (256 = D/2)"},
    "residual": {"dim": "768-d ViT features (512, the ViM paper's value for D=768)"},
}
# OpenOOD's Evaluator wraps the network for these postprocessors (openood.networks.*).
NET_WRAPPERS = {
    "react": ("react_net", "ReactNet"),
    "ash": ("ash_net", "ASHNet"),
    "scale": ("scale_net", "ScaleNet"),
    "adascale_a": ("adascale_net", "AdaScaleANet"),
    "adascale_l": ("adascale_net", "AdaScaleLNet"),
}
# Postprocessors whose code indexes input channels 0, 1 and 2.
THREE_CHANNELS = {"odin", "iodin", "mds_ensemble"}
# Config files not named after the postprocessor (get_postprocessor would download
# "<name>.yml", which does not exist upstream for these either).
CONFIG_FILES = {"patchcore": "patch.yml", "grood": "grood.yaml"}
# WORKAROUND: AdaScale builds k1_/k2_/ecdf/min_percentile only in set_hyperparam, which
# OpenOOD's Evaluator calls during its APS search alone; without APS, postprocess would fail, so
# the defaults from its config are applied with set_hyperparam(get_hyperparam()) after setup.
INIT_BY_SET_HYPERPARAM = {"adascale_a", "adascale_l"}
# Postprocessors whose ``setup`` reads the ID validation loader (``id_loader_dict['val']``, which
# the adapter fills with ``calib``): activation percentiles (ReAct, VRA, AdaScale), the
# temperature, the principal space (Residual), class means (GROOD, KLM, CFOOD, MDS ensemble).
# Conformal p-values on top of them use the half of calib they did not see
# (ood_bench.calibration); read from OpenOOD's postprocessors at the pinned commit.
READS_VAL = {
    "adascale_a",
    "adascale_l",
    "cfood",
    "grood",
    "klm",
    "mds_ensemble",
    "react",
    "residual",
    "temp_scaling",
    "vra",
}


def status(name: str) -> tuple[str, str]:
    """``("ok", note)`` or ``("unsupported", reason)`` of a registered postprocessor."""
    if name in UNSUPPORTED:
        return "unsupported", UNSUPPORTED[name]
    return "ok", NOTES.get(name, "")
