// The Stratus dashboard's live parts: a job's progress over SSE, and the
// event stream. The session cookie authorizes these GET requests.
"use strict";

function text(el, v) { if (el) el.textContent = String(v); }

function liveJob(box) {
  const id = box.dataset.job;
  const source = new EventSource("/v1/jobs/" + id + "/events");
  source.addEventListener("progress", (e) => {
    const j = JSON.parse(e.data);
    const done = j.succeeded + j.failed + j.cancelled;
    const bar = document.querySelector("#job-progress .progress span");
    if (bar) bar.style.width = (j.total ? (100 * done / j.total) : 100).toFixed(1) + "%";
    const label = document.querySelector("#job-progress");
    if (label && label.lastChild) label.lastChild.textContent = " " + done + "/" + j.total;
    text(document.getElementById("job-succeeded"), j.succeeded);
    text(document.getElementById("job-failed"), j.failed);
    text(document.getElementById("job-running"), j.running);
    box.dataset.state = j.state;
    if (["succeeded", "failed", "cancelled"].includes(j.state)) {
      source.close();
      // The plots are drawn by the server: redraw them with the whole job.
      window.location.reload();
    }
  });
  source.onerror = () => source.close();
}

async function liveEvents(box) {
  const table = document.querySelector("#events tbody");
  const res = await fetch("/v1/events?follow=true&after=" + box.dataset.after);
  if (!res.ok || !res.body) return;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line && table) table.prepend(eventRow(JSON.parse(line)));
    }
  }
}

function eventRow(e) {
  const tr = document.createElement("tr");
  tr.className = "new";
  tr.dataset.seq = e.seq;
  tr.dataset.type = e.type;
  const cell = (v, tag) => {
    const td = document.createElement("td");
    const inner = tag ? document.createElement(tag) : td;
    inner.textContent = v;
    if (tag) td.appendChild(inner);
    tr.appendChild(td);
    return inner;
  };
  for (const v of [e.seq, e.type, e.source, e.subject || ""]) cell(v);
  cell("just now", "time").title = e.time;
  cell(e.data === undefined ? "" : JSON.stringify(e.data).slice(0, 200), "code");
  return tr;
}

document.addEventListener("DOMContentLoaded", () => {
  const job = document.getElementById("job");
  if (job && job.dataset.live === "true") liveJob(job);
  const events = document.getElementById("event-stream");
  if (events) liveEvents(events).catch(() => {});
});
