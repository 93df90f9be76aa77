// The reference for how a shop frontend uses the recommendation API, through recsys-client.js:
// the home page (home placement, infinite scroll by cursor), a product page (product placement and
// frequently bought together), a cart (cart placement), and the events every click sends.
import { RecsysClient } from "./recsys-client.js";

const $ = (id) => document.getElementById(id);
const state = { recommendationId: null, cursor: null, cart: [] };

function client() {
  return new RecsysClient("", {
    apiKey: $("key").value.trim() || null,
    onCall: (method, path, status) => {
      const li = document.createElement("li");
      li.textContent = `${method} ${path} -> ${status}`;
      $("calls").prepend(li);
    },
  });
}

const user = () => $("user").value.trim();

// Every value from the API is data: it goes into the page as text (textContent), never as markup.
// An item id or title that holds a script renders as those characters, and the CSP refuses inline script.
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The reason the API gives for an item, in the shop's words ("Because you viewed <title>").
const REASONS = {
  popular: "Popular right now", new: "New in", explore: "Something new to discover", pinned: "Featured",
  promoted: "Promoted", buy_again: "Time to buy again",
};

function because(reason) {
  if (!reason) return "";
  const named = reason.title || reason.item_id;
  if (named && (reason.kind === "similar_to" || reason.kind === "session")) return `Because you viewed ${named}`;
  if (named && reason.kind === "bought_together") return `Bought together with ${named}`;
  return REASONS[reason.kind] || "";
}

function card(item, list) {
  const div = el("div", "card");
  div.dataset.item = item.item_id;
  div.dataset.reason = item.reason?.kind ?? "";
  const price = item.price == null ? "" : `$${Number(item.price).toFixed(2)}`;
  const title = el("h3", "title", item.title || item.item_id);
  const button = el("button", "cart", "Add to cart");
  div.append(
    title,
    el("span", "cat", item.category || ""),
    el("span", "price", price),
    el("span", "why", because(item.reason)),
    el("span", "score", `${item.item_id} · score ${Number(item.score).toFixed(3)}`),
    button,
  );
  title.addEventListener("click", () => showProduct(item, list).catch(report));
  button.addEventListener("click", () => addToCart(item, list).catch(report));
  return div;
}

function render(target, list, append = false) {
  state.recommendationId = list.recommendation_id;
  const cards = list.items.map((item) => card(item, list));
  if (append) $(target).append(...cards); else $(target).replaceChildren(...cards);
}

function sendEvent(type, item, list, quantity) {
  const event = {
    user_id: user(), item_id: item.item_id, event_type: type,
    timestamp: new Date().toISOString(), recommendation_id: list?.recommendation_id ?? state.recommendationId,
  };
  if (quantity) { event.quantity = quantity; if (item.price != null) event.price = item.price; }
  return client().sendEvents(event);
}

async function showHome(event) {
  if (event) event.preventDefault();
  const category = $("category").value.trim() || undefined;
  const list = await client().placement("home", { userId: user(), n: 12, category, details: true, paginate: true });
  state.cursor = list.cursor;
  $("for").textContent = user();
  $("meta").textContent = `source: ${list.source} · model v${list.model_version ?? "-"}`;
  render("recs", list);
}

async function more() {
  const list = await client().placement("home", { userId: user(), n: 12, details: true, cursor: state.cursor });
  render("recs", list, true);
}

async function showProduct(item, list) {
  await sendEvent("view", item, list);
  $("product").hidden = false;
  $("product-title").textContent = item.title || item.item_id;
  $("product-title").dataset.item = item.item_id;
  const api = client();
  const [similar, together] = await Promise.all([
    api.placement("product", { itemId: item.item_id, userId: user(), n: 6, details: true }),
    api.placement("cart", { cart: [item.item_id], n: 4, details: true }),
  ]);
  render("similar", similar);
  render("together", together);
}

async function addToCart(item, list) {
  await sendEvent("add_to_cart", item, list, 1);
  if (!state.cart.some((c) => c.item_id === item.item_id)) state.cart.push(item);
  $("cart").hidden = false;
  $("cart-items").replaceChildren(...state.cart.map((c) => {
    const li = document.createElement("li");
    li.dataset.item = c.item_id;
    li.textContent = c.title || c.item_id;
    return li;
  }));
  const together = await client().placement("cart", { cart: state.cart.map((c) => c.item_id), n: 6, details: true });
  render("cart-recs", together);
}

function report(err) { $("error").textContent = err.message; }

$("who").addEventListener("submit", (e) => showHome(e).catch(report));
$("more").addEventListener("click", () => more().catch(report));
showHome().catch(() => {});
