"""``python -m ood_bench.cli``: the ``ood-bench`` command without the console script."""

from ood_bench.cli import main

raise SystemExit(main())
