// ood-bench results site: sorting and filtering of the plain HTML tables (no dependencies).
// A click on a column header sorts by it (ascending, then descending; empty cells last);
// the menus above a table (made from its rows' data-* attributes) hide the other rows.
(function () {
  "use strict";

  function cellValue(td, numeric) {
    if (!td) return null;
    var s = td.hasAttribute("data-sort") ? td.getAttribute("data-sort") : td.textContent.trim();
    if (s === "" || s === "–") return null;
    if (!numeric) return s;
    var v = parseFloat(s);
    return isNaN(v) ? null : v;
  }

  function sortBy(table, th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "number";
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir);
    var sign = dir === "ascending" ? 1 : -1;
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a.cells[col], numeric);
      var y = cellValue(b.cells[col], numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      if (numeric) return (x - y) * sign;
      return x.localeCompare(y, "en", { numeric: true }) * sign;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    var note = table.caption && table.caption.querySelector(".sorted-by");
    if (note) note.textContent = "(sorted by " + th.textContent.trim() + ", " + dir + ")";
  }

  function addSorting(table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th) {
      th.tabIndex = 0;
      th.classList.add("sortable");
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  }

  function addFilters(table) {
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    var selects = [];
    var bar = document.createElement("div");
    bar.className = "filters";
    Array.prototype.forEach.call(table.attributes, function (attr) {
      if (attr.name.indexOf("data-filter-") !== 0) return;
      var key = attr.name.slice("data-filter-".length);
      var seen = {};
      rows.forEach(function (r) {
        var v = r.getAttribute("data-" + key);
        if (v) seen[v] = true;
      });
      var values = Object.keys(seen).sort();
      if (values.length < 2) return;
      var label = document.createElement("label");
      label.textContent = attr.value + " ";
      var select = document.createElement("select");
      select.setAttribute("data-key", key);
      select.appendChild(new Option("all", ""));
      values.forEach(function (v) { select.appendChild(new Option(v, v)); });
      select.addEventListener("change", apply);
      label.appendChild(select);
      bar.appendChild(label);
      selects.push(select);
    });
    if (!selects.length) return;
    var count = document.createElement("span");
    count.className = "count";
    bar.appendChild(count);
    function apply() {
      var shown = 0;
      rows.forEach(function (r) {
        var keep = selects.every(function (s) {
          return s.value === "" || r.getAttribute("data-" + s.getAttribute("data-key")) === s.value;
        });
        r.hidden = !keep;
        if (keep) shown += 1;
      });
      count.textContent = shown + " of " + rows.length + " rows";
    }
    apply();
    var block = table.closest(".table-block") || table.parentNode;
    block.insertBefore(bar, block.firstChild);
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("main table"), function (table) {
      if (!table.tHead || !table.tBodies.length) return;
      addSorting(table);
      addFilters(table);
    });
  });
})();
