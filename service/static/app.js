// seqtag's page: tag a sentence (POST /v1/models/<name>:tag), stream a dialog (POST /v1/dialogs/...) and register
// a service's SGD schema (PUT /v1/services/<name>).
// Plain JavaScript, no build step; every call goes through the same JSON API as any other client.
"use strict";

const TAG_COLOURS = {  // UPOS, as displaCy-like pastel backgrounds; other tag sets get a colour from the tag's hash
  ADJ: "#fde2a7", ADP: "#c8e6c9", ADV: "#ffd6a5", AUX: "#d1c4e9", CCONJ: "#b3e5fc", DET: "#e1f5fe",
  INTJ: "#f8bbd0", NOUN: "#a5d6a7", NUM: "#ffe0b2", PART: "#e6ee9c", PRON: "#b2dfdb", PROPN: "#81c784",
  PUNCT: "#eeeeee", SCONJ: "#c5cae9", SYM: "#f0f4c3", VERB: "#ef9a9a", X: "#cfd8dc",
};

function tagColour(tag) {
  if (TAG_COLOURS[tag]) return TAG_COLOURS[tag];
  let hash = 0;
  for (const c of tag) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360}, 70%, 85%)`;
}

const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// One API call; an answer other than 2xx throws an Error whose message is "code: message" (the service's one error
// shape, {"error": {"code", "message"}}), with the API's own code and message on it as well (error.code,
// error.apiMessage). A body given as a string is sent as it is (JSON text already), anything else as JSON.
async function api(method, path, body) {
  const options = { method, headers: {} };
  const key = $("api-key").value.trim();  // a service with API keys (SEQTAG_API_KEYS) needs one
  if (key) options.headers["Authorization"] = `Bearer ${key}`;
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const shaped = data && data.error;
    const error = new Error(shaped ? `${data.error.code}: ${data.error.message}` : `HTTP ${response.status}`);
    error.code = shaped ? data.error.code : "";
    error.apiMessage = shaped ? data.error.message : error.message;
    throw error;
  }
  return data;
}

let spanModels = new Set();  // the taggers that answer spans (task "spans"): they take a service

async function loadModels() {
  const { models } = await api("GET", "/v1/models");
  $("tag-model").replaceChildren();
  $("dialog-model").replaceChildren();
  $("dialog-slots").replaceChildren(new Option("none", ""));
  spanModels = new Set();
  for (const model of models.filter((m) => m.state === "AVAILABLE")) {
    const option = new Option(`${model.name} (v${model.serving_version})`, model.name);
    (model.kind === "dialog" ? $("dialog-model") : $("tag-model")).append(option);
    if (model.task === "spans") {
      spanModels.add(model.name);
      $("dialog-slots").append(new Option(model.name, model.name));
    }
  }
  showServiceInputs();
}

// The service lists (the tag panel's, for span models, and the dialog's, for a session's slots): every service
// GET /v1/services knows, registered or shipped, after a "no service" first; each keeps its choice if still listed.
async function loadServices() {
  const { services } = await api("GET", "/v1/services");
  for (const select of [$("tag-service"), $("turn-service")]) {
    const chosen = select.value;
    select.replaceChildren(new Option("no service", ""), ...services.map((service) => {
      const option = new Option(service.service_name, service.service_name);
      option.title = `${service.description} (${service.source}; ${service.slots.length} slots)`;
      return option;
    }));
    select.value = services.some((service) => service.service_name === chosen) ? chosen : "";
  }
}

function showServiceInputs() {
  $("tag-service").hidden = !spanModels.has($("tag-model").value);
  $("turn-service").hidden = !$("dialog-slots").value;
}

// displaCy's entity view: the text as written, each span marked with its label.
function spanView(text, spans) {
  const parts = [];
  let at = 0;
  for (const span of spans) {
    if (span.start > at) parts.push(document.createTextNode(text.slice(at, span.start)));
    const mark = document.createElement("mark");
    mark.className = "entity";
    mark.style.background = tagColour(span.label);
    mark.title = `${span.label} (${(100 * span.score).toFixed(1)} %)`;
    mark.dataset.label = span.label;
    const label = document.createElement("span");
    label.className = "entity-label";
    label.textContent = span.label;
    mark.append(document.createTextNode(text.slice(span.start, span.end)), label);
    parts.push(mark);
    at = span.end;
  }
  if (at < text.length) parts.push(document.createTextNode(text.slice(at)));
  const box = document.createElement("p");
  box.className = "entities";
  box.append(...parts);
  return box;
}

async function tagText(event) {
  event.preventDefault();
  showError("");
  const name = $("tag-model").value;
  try {
    const request = { texts: [$("tag-text").value] };
    if (spanModels.has(name) && $("tag-service").value) request.service = $("tag-service").value;
    const answer = await api("POST", `/v1/models/${encodeURIComponent(name)}:tag`, request);
    const result = answer.results[0];
    const box = $("tag-result");
    if (result.spans) {  // a span model: its spans in the text
      box.replaceChildren(spanView(request.texts[0], result.spans));
      $("tag-meta").textContent = `${answer.model.name} version ${answer.model.version} · ${result.spans.length} spans`;
      return;
    }
    box.replaceChildren(...result.tokens.map((token, i) => {
      const chip = document.createElement("span");
      chip.className = "token";
      chip.style.background = tagColour(result.tags[i]);
      chip.title = `${result.tags[i]} (${(100 * result.scores[i]).toFixed(1)} %)`;
      chip.dataset.tag = result.tags[i];
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = token;
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = result.tags[i];
      chip.append(text, tag);
      return chip;
    }));
    $("tag-meta").textContent = `${answer.model.name} version ${answer.model.version}`;
  } catch (error) {
    showError(error.message);
  }
}

let session = null;  // {id, model, turn}

function setStatus() {
  $("dialog-status").textContent = session ? `session ${session.id.slice(0, 8)}… · turn ${session.turn}` : "no session";
}

async function openSession() {
  const request = { model: $("dialog-model").value };
  if ($("dialog-slots").value) request.slots = $("dialog-slots").value;
  const created = await api("POST", "/v1/dialogs", request);
  session = { id: created.session_id, model: created.model.name, slots: request.slots || "", turn: created.turn };
  setStatus();
}

async function sendTurn(event) {
  event.preventDefault();
  showError("");
  const text = $("turn-text").value;
  const speaker = $("turn-speaker").value;
  try {
    if (!session || session.model !== $("dialog-model").value || session.slots !== $("dialog-slots").value) {
      $("dialog-log").replaceChildren();
      await openSession();
    }
    const turn = { text, speaker };
    if (session.slots && $("turn-service").value) turn.service = $("turn-service").value;
    const answer = await api("POST", `/v1/dialogs/${session.id}/turns`, turn);
    session.turn = answer.turn;
    const labels = answer.labels !== undefined && answer.labels !== null ? answer.labels : [answer.label];
    const item = document.createElement("li");
    item.className = "turn" + (answer.turn % 2 === 0 ? " even" : "");
    item.dataset.turn = answer.turn;
    const who = document.createElement("span");
    who.className = "speaker";
    who.textContent = speaker || "·";
    const said = document.createElement("span");
    said.className = "said";
    said.textContent = text;
    const tags = document.createElement("span");
    tags.className = "labels";
    for (const label of labels.length ? labels : ["(none)"]) {
      const badge = document.createElement("span");
      badge.className = "label";
      badge.textContent = label;
      badge.title = answer.scores[label] !== undefined ? `${(100 * answer.scores[label]).toFixed(1)} %` : "";
      tags.append(badge);
      if (answer.label_name && label === answer.label) {  // a dialog act's name beside its code: qy Yes-No-Question
        const name = document.createElement("span");
        name.className = "label-name";
        name.textContent = answer.label_name;
        tags.append(name);
      }
    }
    item.append(who, said, tags);
    if (answer.slots) {  // the span model's slot values of this turn
      const slots = document.createElement("span");
      slots.className = "slots";
      for (const slot of answer.slots) {
        const chip = document.createElement("span");
        chip.className = "slot";
        chip.style.background = tagColour(slot.label);
        chip.dataset.label = slot.label;
        chip.textContent = `${slot.label}: ${slot.text}`;
        slots.append(chip);
      }
      if (!answer.slots.length) slots.textContent = "no slots";
      item.append(slots);
    }
    $("dialog-log").append(item);
    item.scrollIntoView({ block: "nearest" });
    $("turn-text").value = "";
    setStatus();
  } catch (error) {
    showError(error.message);
  }
}

async function resetDialog() {
  showError("");
  try {
    if (session) {
      const answer = await api("POST", `/v1/dialogs/${session.id}/reset`);
      session.turn = answer.turn;
    }
    $("dialog-log").replaceChildren();
    setStatus();
  } catch (error) {
    showError(error.message);
  }
}

function schemaStatus(message, ok) {
  const status = $("schema-status");
  status.textContent = message;
  status.classList.toggle("bad", !ok);
}

// "Register": the pasted schema, as typed, to PUT /v1/services/<its service_name>. What is not one JSON object
// with a service_name is said here and sent nowhere; the API's refusal shows as its message, verbatim (a field
// path for a schema it refuses: "slots[1].description: field required"). A registered service is then offered in
// both service lists, and chosen in the dialog's.
async function registerService() {
  const text = $("schema-json").value;
  let schema;
  try {
    schema = JSON.parse(text);
  } catch (error) {
    schemaStatus(`not JSON (${error.message}): paste one SGD schema object, {"service_name": …}`, false);
    return;
  }
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
    schemaStatus("not a schema: paste one SGD schema object, {\"service_name\": …}, not a list or a value", false);
    return;
  }
  if (typeof schema.service_name !== "string" || !schema.service_name) {
    schemaStatus("service_name: field required (the service's name, which the schema is registered under)", false);
    return;
  }
  const button = $("schema-register");
  button.disabled = true;
  schemaStatus(`sending ${schema.service_name}…`, true);
  let answer;
  try {
    answer = await api("PUT", `/v1/services/${encodeURIComponent(schema.service_name)}`, text);
  } catch (error) {
    schemaStatus(error.apiMessage || error.message, false);
    return;
  } finally {
    button.disabled = false;
  }
  schemaStatus(`registered ${answer.service_name} (${answer.slots.length} slots)`, true);
  try {
    await loadServices();
    $("turn-service").value = answer.service_name;
  } catch (error) {
    showError(error.message);
  }
}

function loadPage() {
  return Promise.all([loadModels(), loadServices()])
    .then(() => document.body.dataset.ready = "true")
    .catch((error) => showError(error.message));
}

$("tag-form").addEventListener("submit", tagText);
$("tag-model").addEventListener("change", showServiceInputs);
$("dialog-slots").addEventListener("change", showServiceInputs);
$("turn-form").addEventListener("submit", sendTurn);
$("dialog-reset").addEventListener("click", resetDialog);
$("schema-register").addEventListener("click", registerService);
$("api-key").addEventListener("change", () => {  // a key typed in: the models and services it may see
  showError("");
  loadPage();
});
loadPage();
