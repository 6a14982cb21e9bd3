// authsvc cookie-mode client: no framework, no build step.
// The API base comes from ?api=...; it defaults to the `make run` address.
"use strict";

const API = new URLSearchParams(location.search).get("api") || "http://localhost:8000";
let refreshes = 0;

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
  $("me").textContent = JSON.stringify(user, null, 2);
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
  $("me").textContent = "";
  $("sessions").replaceChildren();
  setStatus("signed out");
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
