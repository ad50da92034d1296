// On a page with a live widget (<div class="gpt2-widget">), load the widgets' module from this
// site (widgets/widgets.js, built by scripts/build_widgets.py). Pages opened from disk (file://)
// cannot fetch the models, so they say how to serve the site instead.
(function () {
  var script = document.currentScript;
  function start() {
    var boxes = document.querySelectorAll(".gpt2-widget");
    if (!boxes.length) return;
    if (location.protocol === "file:") {
      boxes.forEach(function (box) {
        box.textContent = "The live demo runs when the site is served over HTTP, as on the " +
          "book's website; locally: python -m http.server -d _build/html, then open " +
          "http://localhost:8000.";
      });
      return;
    }
    var module = document.createElement("script");
    module.type = "module";
    module.src = new URL("../widgets/widgets.js", script.src).href;
    document.head.appendChild(module);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
