// Live project page: uploads in flight, new clips and device changes, from server-sent events.
(function () {
  var root = document.querySelector("[data-events]");
  if (!root || !window.EventSource) return;
  var inflight = document.getElementById("inflight");
  var media = document.getElementById("media");
  var source = new EventSource(root.getAttribute("data-events"));
  source.addEventListener("progress", function (e) {
    var items = JSON.parse(e.data);
    inflight.textContent = "";
    if (!items.length) { inflight.innerHTML = "<p class=muted>Nothing uploading.</p>"; return; }
    items.forEach(function (item) {
      var row = document.createElement("div");
      var name = document.createElement("div");
      name.className = "mono";
      name.textContent = item.path;
      var bar = document.createElement("progress");
      bar.max = item.total || 1;
      bar.value = item.received;
      bar.setAttribute("aria-label", "upload progress of " + item.path);
      row.appendChild(name);
      row.appendChild(bar);
      inflight.appendChild(row);
    });
  });
  function refresh(target) {
    fetch(target.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) target.innerHTML = html; });
  }
  source.addEventListener("media", function () {
    refresh(media);
    refresh(devices); // clips today
  });
  var devices = document.getElementById("devices");
  source.addEventListener("devices", function () { refresh(devices); });
})();
