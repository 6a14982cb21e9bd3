// authsvc cookie-mode client: no framework, no build step.
// The API base comes from ?api=...; it defaults to the `make run` address.
"use strict";

const params = new URLSearchParams(location.search);
const API = params.get("api") || "http://localhost:8000";
let refreshes = 0;
let profile = null; // the last /me answer

const $ = (id) => document.getElementById(id);

function readCookie(name) {
  // Only the CSRF cookies are readable here; the token cookies are httpOnly.
  const entry = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return entry ? decodeURIComponent(entry.slice(name.length + 1)) : null;
}

async function call(path, { method = "GET", body, csrfCookie = "csrf_access_token" } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    const token = readCookie(csrfCookie);
    if (token) headers["X-CSRF-TOKEN"] = token;
  }
  return fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "include", // send and accept the httpOnly cookies
  });
}

async function problemCode(response) {
  try {
    return (await response.clone().json()).code;
  } catch {
    return null;
  }
}

// Call an authenticated endpoint; when the access token has expired (or its cookie is gone),
// refresh silently once with the refresh cookie and try again.
async function authed(path, options) {
  let response = await call(path, options);
  if (response.status === 401 && ["invalid_token", "missing_token"].includes(await problemCode(response))) {
    const refreshed = await call("/refresh", { method: "POST", csrfCookie: "csrf_refresh_token" });
    if (refreshed.ok) {
      refreshes += 1;
      $("refreshes").textContent = String(refreshes);
      response = await call(path, options);
    }
  }
  return response;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function report(response) {
  const body = await response.json().catch(() => ({}));
  setStatus(`${response.status} ${body.code || ""} ${body.detail || ""}`.trim(), true);
}

async function credentials(path) {
  const body = { username: $("username").value, password: $("password").value };
  if (path === "/signup" && $("email").value) body.email = $("email").value; // mails a link
  const response = await call(path, { method: "POST", body });
  if (!response.ok) return report(response);
  const data = await response.json();
  // The body also carries the tokens (for header-mode clients); this page ignores them.
  setStatus(`signed in as ${data.user.username}`);
  await showMe();
}

async function showMe() {
  const response = await authed("/me");
  if (!response.ok) {
    $("me").textContent = "";
    return report(response);
  }
  const user = await response.json();
  profile = user;
  $("me").textContent = JSON.stringify(user, null, 2);
  $("email-state").textContent = user.email
    ? `${user.email} (${user.email_verified ? "verified" : "not verified"})`
    : "none";
  setStatus(`signed in as ${user.username}`);
}

async function listSessions() {
  const response = await authed("/sessions");
  if (!response.ok) return report(response);
  const { sessions } = await response.json();
  const list = $("sessions");
  list.replaceChildren();
  for (const session of sessions) {
    const item = document.createElement("li");
    item.textContent = `${session.id.slice(0, 8)} · ${session.user_agent || "?"} · since ${session.created_at}`;
    if (session.current) item.className = "current";
    list.appendChild(item);
  }
}

async function logout() {
  // With the access cookie (and its CSRF cookie) already expired, logout uses the refresh
  // cookie, which is also sent to /logout, and its CSRF cookie.
  const csrfCookie = readCookie("csrf_access_token") ? "csrf_access_token" : "csrf_refresh_token";
  const response = await call("/logout", { method: "POST", csrfCookie });
  if (response.status !== 204) return report(response);
  profile = null;
  $("me").textContent = "";
  $("email-state").textContent = "-";
  $("sessions").replaceChildren();
  setStatus("signed out");
}

// E-mail (DESIGN §9). Each request for a mail answers 202 alike whether or not an account
// uses the address, so the page can only say that a message may be on its way.
async function mailed(response) {
  if (response.status !== 202) return report(response);
  setStatus((await response.json()).detail);
}

async function forgotPassword() {
  const body = { email: $("forgot-email").value };
  await mailed(await call("/password/forgot", { method: "POST", body }));
}

async function resendVerification() {
  // No body: the caller's own address (the access cookie says whose), so the answer can be
  // plain: 400 no_email or 409 email_already_verified.
  await mailed(await call("/email/verification", { method: "POST" }));
}

async function changeEmail() {
  const body = { email: $("new-email").value, current_password: $("change-password").value };
  await mailed(await authed("/email/change", { method: "POST", body }));
}

// A mailed link opens this page with ?action=reset|verify&token=... (AUTHSVC_EMAIL_LINK_URL).
// Opening it spends nothing (mail scanners open links too): the token is POSTed only when
// its button is clicked. It leaves the address bar (and so the history) at once.
const link = { action: params.get("action"), token: params.get("token") };

function showLink() {
  if (!link.token || !["reset", "verify"].includes(link.action)) return;
  params.delete("action");
  params.delete("token");
  const query = String(params);
  history.replaceState(null, "", location.pathname + (query ? `?${query}` : ""));
  $("link").hidden = false;
  $(`link-${link.action}`).hidden = false;
}

// The link's one POST, with its button disabled meanwhile (a double click spends it once).
async function spend(button, path, body) {
  $(button).disabled = true;
  try {
    return await call(path, { method: "POST", body: { token: link.token, ...body } });
  } finally {
    $(button).disabled = false;
  }
}

async function setPassword() {
  const body = { new_password: $("new-password").value };
  const response = await spend("set-password", "/password/reset", body);
  if (response.status !== 204) return report(response);
  $("link").hidden = true;
  setStatus("password set: every session was logged out; log in with the new password");
}

async function confirmEmail() {
  const response = await spend("confirm-email", "/email/verify", {});
  if (!response.ok) return report(response);
  const user = await response.json();
  $("link").hidden = true;
  setStatus(`e-mail confirmed: ${user.email}`);
}

function guard(action) {
  return () => action().catch((error) => setStatus(`network error: ${error.message}`, true));
}

$("api").textContent = API;
$("signup").addEventListener("click", guard(() => credentials("/signup")));
$("login").addEventListener("click", guard(() => credentials("/login")));
$("show-me").addEventListener("click", guard(showMe));
$("list-sessions").addEventListener("click", guard(listSessions));
$("logout").addEventListener("click", guard(logout));
$("forgot").addEventListener("click", guard(forgotPassword));
$("resend-verification").addEventListener("click", guard(resendVerification));
$("change-email").addEventListener("click", guard(changeEmail));
$("set-password").addEventListener("click", guard(setPassword));
$("confirm-email").addEventListener("click", guard(confirmEmail));
showLink();
