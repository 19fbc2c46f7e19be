// Live updates: every few seconds the page asks the server for its live region again and
// swaps it in place (server-rendered HTML, no framework). A lost session goes back to the
// sign-in form; a network hiccup waits for the next round.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) {
    return;
  }
  var every = Number(live.getAttribute("data-refresh-ms")) || 3000;
  var refreshes = 0;

  function refresh() {
    fetch(window.location.href, {
      headers: { "X-Dashboard-Live": "1" },
      credentials: "same-origin",
      cache: "no-store",
      redirect: "follow"
    })
      .then(function (response) {
        if (response.redirected || response.status === 401) {
          window.location.assign("/dashboard/sign-in");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          live.innerHTML = html;
          refreshes += 1;
          document.body.setAttribute("data-refreshes", String(refreshes));
        }
      })
      .catch(function () {})
      .then(function () {
        window.setTimeout(refresh, every);
      });
  }

  window.setTimeout(refresh, every);
})();
