// A running thread's page follows its progress: the server streams the progress events
// `signoff watch` reads (server-sent events); each is added to the list as text, never as
// markup. When the run stops the page reloads once, to show the timeline and drafts it left.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box || !window.EventSource) { return; }
  var list = document.getElementById("live-events");
  var status = document.getElementById("status");
  var source = new EventSource(box.getAttribute("data-stream"));
  function add(text, warn) {
    var item = document.createElement("li");
    item.textContent = text;
    if (warn) { item.className = "warn"; }
    list.appendChild(item);
  }
  source.addEventListener("progress", function (message) {
    var event = JSON.parse(message.data);
    box.hidden = false;
    add(event.line, event.warn);
    if (event.status && status) { status.textContent = event.status; status.className = "status status-" + event.status; }
  });
  source.addEventListener("stop", function (message) {
    var event = JSON.parse(message.data);
    add(event.line, event.warn);
    source.close();
    window.setTimeout(function () { window.location.reload(); }, 300);
  });
})();
