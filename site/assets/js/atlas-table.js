/* Compression Atlas: sortable, filterable tables. Vanilla JS, no network, no dependencies.
 *
 * A <table class="atlas-sortable"> sorts by a column when its heading is clicked (or Enter is
 * pressed on it); <th data-type="num"> sorts numerically by the cells' data-sort (or text).
 * The comparison table (#atlas-comparison) is filtered by the controls #atlas-filter-category
 * (rows' data-categories), #atlas-filter-verdict (rows' data-verdict) and #atlas-filter-text.
 */
(function () {
  "use strict";

  function cellValue(row, col, type) {
    var cell = row.cells[col];
    if (!cell) return type === "num" ? Infinity : "";
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (type === "num") {
      var n = parseFloat(raw);
      return isNaN(n) ? Infinity : n;
    }
    return raw.trim().toLowerCase();
  }

  function sortBy(table, th) {
    var col = parseInt(th.getAttribute("data-col") || th.cellIndex, 10);
    var type = th.getAttribute("data-type") || "text";
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (r, i) { r._atlasIndex = i; });
    rows.sort(function (a, b) {
      var x = cellValue(a, col, type), y = cellValue(b, col, type);
      var empty = function (v) { return v === "" || v === Infinity; };
      if (empty(x) !== empty(y)) return empty(x) ? 1 : -1; /* blanks last, either way */
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (!asc) c = -c;
      return c || a._atlasIndex - b._atlasIndex;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }

  function makeSortable(table) {
    if (table._atlasSortable || !table.tHead) return;
    table._atlasSortable = true;
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      if (!th.hasAttribute("data-col")) th.setAttribute("data-col", i);
      th.classList.add("atlas-sort-head");
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  }

  function setupFilters() {
    var table = document.getElementById("atlas-comparison");
    if (!table || table._atlasFiltered) return;
    table._atlasFiltered = true;
    var cat = document.getElementById("atlas-filter-category");
    var verdict = document.getElementById("atlas-filter-verdict");
    var text = document.getElementById("atlas-filter-text");
    var count = document.getElementById("atlas-filter-count");
    var rows = table.tBodies[0].rows;

    function apply() {
      var c = cat ? cat.value : "";
      var v = verdict ? verdict.value : "";
      var q = text ? text.value.trim().toLowerCase() : "";
      var shown = 0;
      for (var i = 0; i < rows.length; i++) {
        var r = rows[i];
        var ok = (!c || (" " + r.getAttribute("data-categories") + " ").indexOf(" " + c + " ") >= 0) &&
                 (!v || r.getAttribute("data-verdict") === v) &&
                 (!q || r.textContent.toLowerCase().indexOf(q) >= 0);
        r.hidden = !ok;
        if (ok) shown++;
      }
      if (count) count.textContent = shown + " of " + rows.length + " papers";
    }

    /* ?category=pruning preselects a category (links from the category pages) */
    var m = /[?&]category=([^&#]+)/.exec(window.location.search);
    if (m && cat) cat.value = decodeURIComponent(m[1]);
    [cat, verdict].forEach(function (el) { if (el) el.addEventListener("change", apply); });
    if (text) text.addEventListener("input", apply);
    apply();
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.atlas-sortable"), makeSortable);
    setupFilters();
  }

  if (typeof window.document$ !== "undefined" && window.document$.subscribe) {
    window.document$.subscribe(init); /* material's instant navigation, if enabled */
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
