// The operator's console: every call sends the admin key; everything shown is set as text, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
let adminKey = ""; // held by this page only: never in a URL, a cookie or the origin's storage

async function call(path) {
  const response = await fetch(path, { headers: { "X-API-Key": adminKey } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${response.status}: ${typeof body.detail === "string" ? body.detail : response.statusText}`);
  }
  return body;
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "-" : String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function rows(selector, items, columns) {
  const body = $(`${selector} tbody`);
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    for (const column of columns) cell(row, column(item));
    body.appendChild(row);
  }
  return body;
}

function term(list, name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value === null || value === undefined ? "-" : String(value);
  list.append(dt, dd);
}

function versions(overview) {
  const list = $("#versions");
  list.replaceChildren();
  const line = (v) =>
    v
      ? `${v.version} (model v${v.model_version ?? "?"}, published ${v.published_at ?? "?"}` +
        `${v.calibrated ? "" : "; no calibration: revenue placements rank by relevance"})`
      : "none";
  term(list, "production", line(overview.active));
  term(list, "challenger", line(overview.challenger));
  if (overview.experiment) term(list, "experiment", `${overview.experiment.id} since ${overview.experiment.started_at}`);
}

function placements(overview) {
  const body = $("#placements tbody");
  body.replaceChildren();
  for (const p of overview.placements) {
    const row = document.createElement("tr");
    row.dataset.placement = p.name;
    cell(row, p.name);
    cell(row, p.feed);
    cell(row, p.n);
    cell(row, p.explore);
    cell(row, JSON.stringify(p.rules.rules, null, 1), "rules");
    cell(row, `${p.rules.by} ${p.rules.at ?? ""}`.trim());
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "history";
    button.addEventListener("click", () =>
      history(p.name).catch((error) => {
        $("#error").textContent = `rules history of ${p.name}: ${error.message}`;
      }),
    );
    row.appendChild(document.createElement("td")).appendChild(button);
    body.appendChild(row);
  }
}

async function history(name) {
  const entries = await call(`/v1/rules/${encodeURIComponent(name)}/history?limit=20`);
  $("#history-title").hidden = false;
  $("#history-title").textContent = `Rules history of ${name}`;
  const list = $("#history");
  list.replaceChildren();
  for (const entry of entries) {
    const li = document.createElement("li");
    li.textContent = `${entry.at ?? ""} by ${entry.by}: ${JSON.stringify(entry.rules)}`;
    list.appendChild(li);
  }
}

function rate(r) {
  return r ? `${(100 * r.rate).toFixed(2)}% [${(100 * r.low).toFixed(2)}, ${(100 * r.high).toFixed(2)}]` : "-";
}

function experiment(overview) {
  const report = overview.experiment_report;
  const arms = report ? [["production", report.production], ["challenger", report.challenger]] : [];
  rows("#arms", arms, [
    ([name]) => name,
    ([, arm]) => `v${arm.model_version}`,
    ([, arm]) => arm.users,
    ([, arm]) => rate(arm.click_through),
    ([, arm]) => rate(arm.add_to_cart),
    ([, arm]) => (arm.revenue ? arm.revenue.per_user.toFixed(2) : "-"),
  ]);
  const lift = report && report.revenue_per_user_lift;
  $("#lift").textContent = !report
    ? "no experiment report yet (recsys experiment report)"
    : `revenue per user, challenger - production: ${lift.difference.toFixed(2)}` +
      (lift.low === null ? "" : ` [${lift.low.toFixed(2)}, ${lift.high.toFixed(2)}]`) +
      `; click-through p = ${report.click_through_p.toFixed(4)}`;
}

function exports(overview) {
  rows("#exports", Object.values(overview.exports), [
    (e) => e.placement,
    (e) => `v${e.model_version}`,
    (e) => e.users,
    (e) => e.rows,
    (e) => e.target,
    (e) => e.seconds,
  ]);
}

async function show() {
  $("#error").textContent = "";
  try {
    const overview = await call("/v1/admin/overview");
    versions(overview);
    placements(overview);
    experiment(overview);
    exports(overview);
    $("#board").hidden = false;
  } catch (error) {
    $("#board").hidden = true;
    const why = /^40[13]/.test(error.message) ? "the console needs an admin key" : "the API did not answer";
    $("#error").textContent = `${why}: ${error.message}`;
  }
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  adminKey = $("#key").value;
  show();
});
$("#open").disabled = false; // the form sends nothing anywhere before this script handles it
