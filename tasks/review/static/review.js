// The review page's keyboard and decisions (tasks/review/app.py renders the page).
// Every text written into the page goes through textContent: nothing from the data is parsed as HTML.
"use strict";

(function () {
  const STORE = "faceset-reviewer";
  const token = document.querySelector("meta[name=review-token]").content;
  const fields = document.querySelector("meta[name=review-fields]").content.split(" ").filter(Boolean);
  const faces = Array.from(document.querySelectorAll("article.face"));
  const keys = {};
  document.querySelectorAll("kbd[data-key]").forEach((k) => { keys[k.dataset.key] = k.dataset.action; });
  const statusLine = document.getElementById("status");
  const form = document.getElementById("reviewer-form");
  const input = document.getElementById("reviewer-input");
  let current = 0;

  function say(text, bad) {
    statusLine.textContent = text;
    statusLine.className = bad ? "bad" : "";
  }

  function reviewer() { return localStorage.getItem(STORE) || ""; }

  function showReviewer() {
    document.getElementById("reviewer-name").textContent = reviewer() || "(none)";
    form.hidden = Boolean(reviewer());
    if (!reviewer()) { input.focus(); }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name) { return; }
    localStorage.setItem(STORE, name);
    showReviewer();
    focusFace(current);
  });
  document.getElementById("reviewer-change").addEventListener("click", () => {
    input.value = reviewer();
    form.hidden = false;
    input.focus();
  });

  function focusFace(index) {
    if (!faces.length) { return; }
    current = Math.max(0, Math.min(index, faces.length - 1));
    faces.forEach((face, i) => face.classList.toggle("current", i === current));
    faces[current].focus({ preventScroll: true });
    faces[current].scrollIntoView({ block: "nearest" });
  }

  function other(face) {
    // identity decisions compare a face with its group's first face (the first with the second)
    const members = face.dataset.groupItems.split(" ").filter(Boolean);
    return members[0] === face.dataset.item ? members[1] : members[0];
  }

  async function send(face, action, field, value) {
    if (!reviewer()) { say("give your name first: it is recorded with every decision", true); form.hidden = false; input.focus(); return; }
    const note = face.querySelector("input.note");
    const body = { item_id: face.dataset.item, action: action, field: field || "", value: value || "",
                   note: note.value, reviewer: reviewer() };
    // on to the next face at once: a quick reviewer's next key is for the next face, not this one
    note.value = "";
    focusFace(faces.indexOf(face) + 1);
    const failed = (why) => {
      note.value = body.note;
      say("not recorded: " + face.dataset.item + " " + action + ": " + why, true);
    };
    let answer;
    try {
      const response = await fetch("/api/decisions", { method: "POST", body: JSON.stringify(body),
        headers: { "Content-Type": "application/json", "X-Review-Token": token } });
      answer = await response.json();
      if (!response.ok) { failed(answer.error); return; }
    } catch (error) {
      failed("the review app did not answer (" + error + ")");
      return;
    }
    const item = document.createElement("li");
    item.textContent = answer.recorded;
    face.querySelector("ul.decisions").appendChild(item);
    face.classList.add("decided");
    say("recorded: " + face.dataset.item + " " + answer.recorded);
  }

  function openRelabel(face) {
    const box = face.querySelector("input.relabel");
    box.hidden = false;
    if (!box.value) { box.value = (fields[0] || "") + "="; }
    box.focus();
  }

  function submitRelabel(face) {
    const box = face.querySelector("input.relabel");
    const at = box.value.indexOf("=");
    const field = at > 0 ? box.value.slice(0, at).trim() : "";
    const value = at > 0 ? box.value.slice(at + 1).trim() : "";
    if (!field || !value) { say("relabel needs FIELD=VALUE, e.g. " + (fields[0] || "label") + "=new value", true); return; }
    box.hidden = true;
    box.value = "";
    send(face, "relabel", field, value);
  }

  function act(action, face) {
    switch (action) {
      case "next": focusFace(current + 1); break;
      case "previous": focusFace(current - 1); break;
      case "next_page": case "previous_page": {
        const link = document.getElementById(action === "next_page" ? "next-page" : "previous-page");
        if (link) { window.location.href = link.href; }
        break;
      }
      case "note": face.querySelector("input.note").focus(); break;
      case "relabel": openRelabel(face); break;
      case "same_person": case "different_person":
        if (!other(face)) { say("same or different person: only in the duplicates and identity groups queues", true); break; }
        send(face, action, "", other(face));
        break;
      default: send(face, action);
    }
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA") {
      const face = target.closest("article.face");
      if (face && target.classList.contains("relabel")) {
        if (event.key === "Enter") { event.preventDefault(); submitRelabel(face); }
        if (event.key === "Escape") { target.hidden = true; focusFace(faces.indexOf(face)); }
      } else if (face && (event.key === "Enter" || event.key === "Escape")) {
        event.preventDefault();
        focusFace(faces.indexOf(face));
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    const action = keys[event.key];
    if (!action || (!faces.length && !action.endsWith("page"))) { return; }
    event.preventDefault();
    act(action, faces[current]);
  });

  faces.forEach((face, i) => {
    face.addEventListener("click", () => { if (current !== i) { focusFace(i); } });
    face.querySelectorAll("button[data-action]").forEach((button) => {
      button.addEventListener("click", (event) => { event.stopPropagation(); focusFace(i); act(button.dataset.action, face); });
    });
  });

  showReviewer();
  if (reviewer()) { focusFace(0); }
})();
