// The reference for how a shop frontend calls the recommendation API: three GETs and one POST.
const $ = (id) => document.getElementById(id);
let lastRecommendationId = null;

function headers() {
  const key = $("key").value.trim();
  return key ? { "X-API-Key": key, "Content-Type": "application/json" } : { "Content-Type": "application/json" };
}

async function call(method, url, body) {
  const response = await fetch(url, { method, headers: headers(), body: body ? JSON.stringify(body) : undefined });
  const li = document.createElement("li");
  li.textContent = `${method} ${url} -> ${response.status}`;
  $("calls").prepend(li);
  return response.ok ? response.json() : Promise.reject(new Error(`${response.status} ${await response.text()}`));
}

function card(item) {
  const div = document.createElement("div");
  div.className = "card";
  div.dataset.item = item.item_id;
  const price = item.price == null ? "" : `$${Number(item.price).toFixed(2)}`;
  div.innerHTML = `<h3 class="title"></h3><span class="cat"></span><span class="price">${price}</span>
    <span class="score">${item.item_id} · score ${Number(item.score).toFixed(3)}</span>
    <button class="cart">Add to cart</button>`;
  div.querySelector(".title").textContent = item.title || item.item_id;
  div.querySelector(".cat").textContent = item.category || "";
  div.querySelector(".title").addEventListener("click", () => view(item));
  div.querySelector(".cart").addEventListener("click", () => sendEvent("add_to_cart", item, 1));
  return div;
}

function render(target, items) {
  $(target).replaceChildren(...items.map(card));
}

async function sendEvent(type, item, quantity) {
  const event = {
    user_id: $("user").value.trim(), item_id: item.item_id, event_type: type,
    timestamp: new Date().toISOString(), recommendation_id: lastRecommendationId,
  };
  if (quantity) { event.quantity = quantity; if (item.price != null) event.price = item.price; }
  return call("POST", "/v1/events", event);
}

async function view(item) {
  await sendEvent("view", item);
  $("similar-to").textContent = item.title || item.item_id;
  const similar = await call("GET", `/v1/items/${encodeURIComponent(item.item_id)}/similar?n=6&details=true`);
  render("similar", similar.items);
}

async function showRecommendations(event) {
  if (event) event.preventDefault();
  const user = $("user").value.trim();
  const category = $("category").value.trim();
  const query = new URLSearchParams({ n: "12", details: "true" });
  if (category) query.set("category", category);
  const recs = await call("GET", `/v1/users/${encodeURIComponent(user)}/recommendations?${query}`);
  lastRecommendationId = recs.recommendation_id;
  $("for").textContent = user;
  $("meta").textContent = `source: ${recs.source} · model v${recs.model_version ?? "-"}`;
  render("recs", recs.items);
}

$("who").addEventListener("submit", (e) => showRecommendations(e).catch((err) => alert(err.message)));
showRecommendations().catch(() => {});
