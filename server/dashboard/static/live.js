// Live transcripts: each list with data-events follows its call's Server-Sent Events.
// Events: "transcript" (a stored turn or event, JSON), "interim" (caller text so far), "end".
(function () {
  function line(list, ev) {
    var li = document.createElement("li");
    li.className = (ev.role || "system") + (ev.interrupted ? " interrupted" : "");
    var who = document.createElement("span");
    who.className = "who";
    who.textContent = ev.role || ev.kind || "event";
    li.appendChild(who);
    var text = document.createElement("span");
    text.className = "heard";
    text.textContent = ev.text || ev.kind || "";
    li.appendChild(text);
    list.appendChild(li);
  }
  document.querySelectorAll("ol.transcript[data-events]").forEach(function (list) {
    var interim = list.parentElement.querySelector(".interim");
    var source = new EventSource(list.getAttribute("data-events"));
    source.addEventListener("call_event", function (msg) {
      line(list, JSON.parse(msg.data));
      if (interim) interim.textContent = "";
    });
    source.addEventListener("interim", function (msg) {
      if (interim) interim.textContent = JSON.parse(msg.data).text || "";
    });
    source.addEventListener("end", function () {
      source.close();
      var done = document.createElement("li");
      done.className = "system";
      done.textContent = "Call ended.";
      list.appendChild(done);
    });
  });
})();
