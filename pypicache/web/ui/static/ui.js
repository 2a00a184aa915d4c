// pypicache's web interface: optional helpers. Every page works without them.
"use strict";
(function () {
  document.documentElement.classList.add("js");

  // The server's URL as this browser sees it (behind any proxy and prefix).
  function fixBaseUrls() {
    var root = document.body.getAttribute("data-root") || "./";
    var base = new URL(root, window.location.href).href.replace(/\/$/, "");
    document.querySelectorAll(".base-url").forEach(function (el) { el.textContent = base; });
  }

  function copyText(text, button) {
    function done() {
      button.classList.add("done");
      button.textContent = "Copied";
      window.setTimeout(function () { button.classList.remove("done"); button.textContent = "Copy"; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
      return;
    }
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "offscreen";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } catch (e) { /* nothing to copy with */ }
    document.body.removeChild(area);
  }

  function setUpCopy() {
    document.addEventListener("click", function (event) {
      var button = event.target.closest("button.copy");
      if (!button) { return; }
      var target = document.getElementById(button.getAttribute("data-copy"));
      if (target) { copyText(target.textContent, button); }
    });
  }

  // Filter as you type: this page's rows at once, then the server's search.
  function setUpFilter() {
    var input = document.getElementById("filter");
    var results = document.getElementById("results");
    if (!input || !results) { return; }
    var timer = null;
    var asked = 0;
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      results.querySelectorAll("#project-list li").forEach(function (li) {
        var text = li.textContent.toLowerCase();
        li.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
      });
      window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        var query = input.value.trim();
        var url = query ? "?q=" + encodeURIComponent(query) : "?";
        var mine = ++asked;
        fetch(url, { headers: { "Accept": "text/html" } }).then(function (response) {
          return response.ok ? response.text() : null;
        }).then(function (html) {
          if (html === null || mine !== asked) { return; }
          var page = new DOMParser().parseFromString(html, "text/html");
          var fresh = page.getElementById("results");
          if (fresh) {
            results.replaceChildren.apply(results, Array.from(fresh.childNodes));
            window.history.replaceState(null, "", url === "?" ? window.location.pathname : url);
          }
        }).catch(function () { /* keep the rows filtered here */ });
      }, 200);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    fixBaseUrls();
    setUpCopy();
    setUpFilter();
  });
})();
