/* Compression Atlas: sortable, filterable tables. Vanilla JS, no network, no dependencies.
 *
 * A <table class="atlas-sortable"> sorts by a column when its heading is clicked (or Enter is
 * pressed on it). A cell sorts by its data-sort attribute where it has one, else by its text.
 * <th data-type="num"> sorts numerically; a heading without data-type sorts numerically when every
 * non-empty cell of its column reads as a number ("[12]", "1,024", "−0.5", "12×" included). Empty
 * cells go last in either direction.
 *
 * The comparison table (#atlas-comparison) is filtered by the controls #atlas-filter-category (rows'
 * data-categories), #atlas-filter-verdict (rows' data-verdict) and #atlas-filter-text (rows' text).
 * The filters live in the page's query string (?category=pruning&verdict=reproduced&search=han), so
 * a filtered view can be linked and survives a reload.
 */
(function () {
  "use strict";

  var QUERY = { category: "atlas-filter-category", verdict: "atlas-filter-verdict", search: "atlas-filter-text" };

  /* A number, or NaN: digits with an optional sign, decimals and exponent; brackets, thousands
   * separators, units (× %) and a typographic minus are allowed around them. */
  function toNumber(raw) {
    var s = String(raw).trim().replace(/[\u2212\u2013]/g, "-").replace(/[\s,\u00d7%\[\]+]/g, "");
    return /^-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(s) ? parseFloat(s) : NaN;
  }

  function rawValue(row, col) {
    var cell = row.cells[col];
    if (!cell) return "";
    return (cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent).trim();
  }

  function isNumericColumn(rows, col) {
    var seen = 0;
    for (var i = 0; i < rows.length; i++) {
      var raw = rawValue(rows[i], col);
      if (raw === "") continue;
      if (isNaN(toNumber(raw))) return false;
      seen++;
    }
    return seen > 0;
  }

  /* The sort key of a cell: a number (NaN when empty), or lower-case text ("" when empty). */
  function sortKey(row, col, numeric) {
    var raw = rawValue(row, col);
    if (numeric) return raw === "" ? NaN : toNumber(raw);
    return raw.toLowerCase();
  }

  function isEmpty(key) {
    return key === "" || (typeof key === "number" && isNaN(key));
  }

  function sortBy(table, th) {
    var col = parseInt(th.getAttribute("data-col") || th.cellIndex, 10);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var type = th.getAttribute("data-type");
    var numeric = type ? type === "num" : isNumericColumn(rows, col);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    var keyed = rows.map(function (r, i) { return { row: r, key: sortKey(r, col, numeric), index: i }; });
    keyed.sort(function (a, b) {
      var x = a.key, y = b.key;
      if (isEmpty(x) !== isEmpty(y)) return isEmpty(x) ? 1 : -1; /* blanks last, either way */
      var c = isEmpty(x) ? 0 : x < y ? -1 : x > y ? 1 : 0;
      if (!asc) c = -c;
      return c || a.index - b.index;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (k) { frag.appendChild(k.row); });
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

  /* The filters as the query string holds them, into the controls. */
  function readQuery(controls) {
    var params = new URLSearchParams(window.location.search);
    Object.keys(controls).forEach(function (name) {
      var el = controls[name];
      var value = params.get(name);
      if (!el || value === null) return;
      el.value = value;
      if (el.value !== value) el.value = ""; /* a category or verdict the page does not offer */
    });
  }

  /* The controls' values into the query string (other parameters kept), without a new history entry. */
  function writeQuery(controls) {
    var params = new URLSearchParams(window.location.search);
    Object.keys(controls).forEach(function (name) {
      var el = controls[name];
      var value = el ? el.value.trim() : "";
      if (value) params.set(name, value); else params.delete(name);
    });
    var query = params.toString();
    try {
      window.history.replaceState(window.history.state, "",
        window.location.pathname + (query ? "?" + query : "") + window.location.hash);
    } catch (e) { /* some browsers refuse it on file:// pages: the filters still apply */ }
  }

  function setupFilters() {
    var table = document.getElementById("atlas-comparison");
    if (!table || table._atlasFiltered) return;
    table._atlasFiltered = true;
    var controls = {};
    Object.keys(QUERY).forEach(function (name) { controls[name] = document.getElementById(QUERY[name]); });
    var count = document.getElementById("atlas-filter-count");
    var rows = table.tBodies[0].rows;

    function apply() {
      var c = controls.category ? controls.category.value : "";
      var v = controls.verdict ? controls.verdict.value : "";
      var q = controls.search ? controls.search.value.trim().toLowerCase() : "";
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

    function changed() {
      apply();
      writeQuery(controls);
    }

    readQuery(controls);
    [controls.category, controls.verdict].forEach(function (el) { if (el) el.addEventListener("change", changed); });
    if (controls.search) controls.search.addEventListener("input", changed);
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
