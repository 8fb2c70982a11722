// The labeling page: one captcha at a time, or a review grid of confident suggestions.
// Everything goes through the JSON API (/v1/...); no framework, no build step, no network.
"use strict";

const $ = (id) => document.getElementById(id);
const QUEUE_BATCH = 50; // queue items fetched at a time (one by one)
const GRID_SIZE = 24; // cells of the review grid
const POLL_MS = 2000; // status refresh

const single = {
  items: [], // the queue ahead, from the server
  current: null, // the item on screen
  history: [], // items saved or skipped, newest last: the back key returns to them
  skipped: new Set(), // ids skipped in this page's life
  edited: false, // the user typed since the item was shown
};
const review = { cells: [], focus: 0 };
let mode = "single";
let suggestionModel = null; // the model the queue's suggestions came from

// -- talking to the API -----------------------------------------------------------------

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(data.detail || `${method} ${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
  box.hidden = !text;
}

async function saveLabel(id, label) {
  await api("PUT", `/v1/labels/${encodeURIComponent(id)}`, { label });
}

// -- one by one -------------------------------------------------------------------------

async function fetchQueue() {
  const data = await api("GET", `/v1/queue?limit=${QUEUE_BATCH + single.skipped.size}`);
  const shown = single.current ? single.current.id : null;
  single.items = data.items.filter((i) => !single.skipped.has(i.id) && i.id !== shown);
}

function show(item, text) {
  single.current = item;
  single.edited = false;
  $("done").hidden = item !== null;
  $("captcha").hidden = item === null;
  const answer = $("answer");
  if (item === null) {
    answer.value = "";
    $("path").textContent = "";
    $("confidence").textContent = "";
    return;
  }
  const image = $("captcha");
  image.onload = () => {
    const scale = Math.max(1, Math.min(6, Math.floor(720 / image.naturalWidth)));
    image.style.width = `${image.naturalWidth * scale}px`;
  };
  image.src = `/v1/images/${encodeURIComponent(item.id)}`;
  $("path").textContent = item.path;
  $("confidence").textContent = item.suggestion
    ? `suggestion ${item.suggestion} (confidence ${(100 * item.confidence).toFixed(1)} %)`
    : "no suggestion yet";
  answer.value = text !== undefined ? text : item.suggestion || "";
  answer.dataset.id = item.id;
  if (mode === "single") {
    answer.focus();
    answer.select(); // typing replaces the suggestion
  }
}

async function next() {
  if (single.items.length === 0) await fetchQueue();
  show(single.items.shift() || null);
}

async function saveCurrent() {
  const item = single.current;
  if (!item) return;
  const label = $("answer").value;
  try {
    await saveLabel(item.id, label);
  } catch (error) {
    showMessage(error.message); // a 422 says which character is not allowed
    $("answer").focus();
    return;
  }
  showMessage("");
  single.skipped.delete(item.id);
  single.history.push({ item, label });
  await next();
}

async function skipCurrent() {
  const item = single.current;
  if (!item) return;
  single.skipped.add(item.id);
  single.history.push({ item, label: null });
  showMessage("");
  await next();
}

function goBack() {
  const previous = single.history.pop();
  if (!previous) {
    showMessage("nothing to go back to", "info");
    return;
  }
  if (single.current) single.items.unshift(single.current);
  single.skipped.delete(previous.item.id);
  showMessage("");
  show(previous.item, previous.label !== null ? previous.label : undefined);
}

$("answer").addEventListener("input", () => {
  single.edited = true;
});
$("answer").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    saveCurrent();
  } else if (event.key === "Tab" && !event.shiftKey) {
    event.preventDefault();
    skipCurrent();
  } else if (event.key === "ArrowUp") {
    event.preventDefault();
    goBack();
  }
});
$("save").addEventListener("click", saveCurrent);
$("skip").addEventListener("click", skipCurrent);
$("back").addEventListener("click", goBack);

// -- review grid ------------------------------------------------------------------------

async function loadGrid() {
  const data = await api("GET", `/v1/queue?limit=${GRID_SIZE}&order=most`);
  const grid = $("grid");
  grid.textContent = "";
  review.cells = data.items
    .filter((item) => item.suggestion)
    .map((item, index) => makeCell(item, index));
  review.cells.forEach((cell) => grid.appendChild(cell.element));
  $("review-empty").hidden = review.cells.length > 0;
  review.focus = 0;
  paintFocus();
}

function makeCell(item, index) {
  const element = document.createElement("div");
  element.className = "cell";
  element.dataset.id = item.id;
  const image = document.createElement("img");
  image.src = `/v1/images/${encodeURIComponent(item.id)}`;
  image.alt = item.path;
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = item.suggestion;
  const confidence = document.createElement("div");
  confidence.className = "conf";
  confidence.textContent = `${(100 * item.confidence).toFixed(1)} %`;
  const input = document.createElement("input");
  input.type = "text";
  input.hidden = true;
  input.autocomplete = "off";
  input.spellcheck = false;
  element.append(image, text, confidence, input);
  const cell = { item, element, input, wrong: false, saved: false };
  element.addEventListener("click", (event) => {
    if (event.target === input) return;
    review.focus = index;
    toggleWrong(cell);
  });
  input.addEventListener("keydown", async (event) => {
    event.stopPropagation();
    if (event.key === "Enter") {
      event.preventDefault();
      try {
        await saveLabel(item.id, input.value);
      } catch (error) {
        showMessage(error.message);
        return;
      }
      showMessage("");
      cell.saved = true;
      cell.wrong = false;
      text.textContent = input.value;
      input.hidden = true;
      element.className = "cell saved";
      paintFocus();
    } else if (event.key === "Escape") {
      input.blur();
    }
  });
  return cell;
}

function toggleWrong(cell) {
  if (cell.saved) return;
  cell.wrong = !cell.wrong;
  cell.element.classList.toggle("wrong", cell.wrong);
  cell.input.hidden = !cell.wrong;
  if (cell.wrong) {
    cell.input.value = cell.item.suggestion;
    cell.input.focus();
    cell.input.select();
  }
  paintFocus();
}

function paintFocus() {
  review.cells.forEach((cell, i) => cell.element.classList.toggle("focus", i === review.focus));
}

async function acceptRest() {
  const open = review.cells.filter((cell) => !cell.wrong && !cell.saved);
  const results = await Promise.allSettled(
    open.map((cell) => saveLabel(cell.item.id, cell.item.suggestion)),
  );
  const failed = results.filter((r) => r.status === "rejected");
  showMessage(failed.length ? `${failed.length} not saved: ${failed[0].reason.message}` : "");
  await loadGrid();
}

function gridKey(event) {
  if (!review.cells.length) return;
  const columns = Math.max(
    1,
    Math.round($("grid").clientWidth / review.cells[0].element.offsetWidth),
  );
  const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns, ArrowDown: columns };
  if (event.key in moves) {
    event.preventDefault();
    review.focus = Math.min(review.cells.length - 1, Math.max(0, review.focus + moves[event.key]));
    paintFocus();
  } else if (event.key === " ") {
    event.preventDefault();
    toggleWrong(review.cells[review.focus]);
  } else if (event.key === "a" || event.key === "A") {
    event.preventDefault();
    acceptRest();
  }
}
$("accept-all").addEventListener("click", acceptRest);

// -- modes, keys, status ----------------------------------------------------------------

async function setMode(wanted) {
  mode = wanted;
  $("single").hidden = mode !== "single";
  $("review").hidden = mode !== "review";
  $("mode-single").classList.toggle("active", mode === "single");
  $("mode-review").classList.toggle("active", mode === "review");
  showMessage("");
  if (mode === "review") {
    document.activeElement.blur();
    await loadGrid();
  } else {
    await fetchQueue();
    if (!single.current) await next();
    $("answer").focus();
  }
}

document.addEventListener("keydown", (event) => {
  if (event.key === "F2") {
    event.preventDefault();
    setMode(mode === "single" ? "review" : "single");
  } else if (mode === "review" && !(event.target instanceof HTMLInputElement)) {
    gridKey(event);
  }
});
$("mode-single").addEventListener("click", () => setMode("single"));
$("mode-review").addEventListener("click", () => setMode("review"));

$("train-now").addEventListener("click", async () => {
  try {
    const data = await api("POST", "/v1/rounds");
    showMessage(`round ${data.round} started`, "info");
  } catch (error) {
    showMessage(error.message);
  }
  pollStatus();
});

function roundText(round, suggestions) {
  if (round.state === "training") return `round ${round.number + 1} training...`;
  if (round.number === 0) {
    if (!suggestions.model) return "no model yet";
    return `no round yet; suggestions from ${suggestions.model.split("/").slice(-2).join("/")}`;
  }
  const accuracy =
    round.accuracy === null
      ? "accuracy -"
      : `accuracy ${(100 * round.accuracy).toFixed(1)} % on ${round.val_images} held-back`;
  return `round ${round.number}: ${accuracy} (${round.labels_used} labels)`;
}

async function pollStatus() {
  let status;
  try {
    status = await api("GET", "/v1/status");
  } catch (error) {
    showMessage(`the app does not answer: ${error.message}`);
    return;
  }
  $("progress").textContent = `${status.labeled} / ${status.total}`;
  $("rate").textContent = status.labels_per_minute.toFixed(1);
  $("round").textContent = roundText(status.round, status.suggestions);
  $("train-now").disabled = status.round.state === "training";
  const error = $("round-error");
  error.hidden = status.round.state !== "failed";
  error.textContent = status.round.state === "failed" ? `round failed: ${status.round.error}` : "";
  const warning = $("round-warning");
  warning.hidden = !status.round.warning;
  warning.textContent = status.round.warning
    ? `the latest model did not learn (${status.round.warning}); its suggestions are shown anyway`
    : "";
  if (status.suggestions.model !== suggestionModel && !status.suggestions.refreshing) {
    const first = suggestionModel === null;
    suggestionModel = status.suggestions.model;
    if (!first || status.suggestions.count) await refreshSuggestions();
  }
}

async function refreshSuggestions() {
  // New suggestions: the queue ahead is fetched again; the item on screen keeps what the
  // user typed, and takes the new suggestion only if untouched.
  await fetchQueue();
  const current = single.current;
  if (current && !single.edited && mode === "single") {
    const fresh = await api("GET", `/v1/queue?limit=${QUEUE_BATCH * 4}`);
    const same = fresh.items.find((i) => i.id === current.id);
    if (same) show(same);
  }
  if (mode === "review") await loadGrid();
}

async function boot() {
  await pollStatus();
  await setMode("single");
  setInterval(pollStatus, POLL_MS);
}
boot();
