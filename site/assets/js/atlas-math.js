/* Compression Atlas: typesets the formulas pymdownx.arithmatex (generic mode) leaves in a page,
 * <span class="arithmatex">\(...\)</span> inline and <div class="arithmatex">\[...\]</div> displayed,
 * with the vendored KaTeX (assets/katex/, MIT). Nothing is fetched from the network.
 */
(function () {
  "use strict";

  function typeset(root) {
    if (typeof katex === "undefined") return;
    var nodes = root.querySelectorAll(".arithmatex");
    for (var i = 0; i < nodes.length; i++) {
      var el = nodes[i];
      if (el.getAttribute("data-atlas-math")) continue;
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      var open = display ? "\\[" : "\\(";
      var close = display ? "\\]" : "\\)";
      if (tex.slice(0, 2) === open && tex.slice(-2) === close) tex = tex.slice(2, -2);
      katex.render(tex, el, { displayMode: display, throwOnError: false });
      el.setAttribute("data-atlas-math", "1");
    }
  }

  if (typeof document$ !== "undefined" && document$.subscribe) {
    document$.subscribe(function () { typeset(document.body); }); // Material's page-load stream
  } else if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { typeset(document.body); });
  } else {
    typeset(document.body);
  }
})();
