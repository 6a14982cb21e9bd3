// authsvc cookie-mode client: no framework, no build step.
// The API base comes from ?api=...; it defaults to the `make run` address.
"use strict";

const params = new URLSearchParams(location.search);
const API = params.get("api") || "http://localhost:8000";
let refreshes = 0;
let profile = null; // the last /me answer
// The second step of a login (DESIGN §10): the mfa_token of the 403 mfa_required answer and
// the factors it names, until /login/mfa takes it. Only in memory: a reload starts over.
let pendingMfa = null;
let enrolment = null; // the id of the authenticator app being set up, until it is confirmed

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
  if (response.status === 403 && (await problemCode(response)) === "mfa_required") {
    return askForCode(await response.json());
  }
  if (!response.ok) return report(response);
  await signedIn(await response.json());
}

// A token response (from /signup, /login or /login/mfa): the cookies are set already.
async function signedIn(data) {
  // The body also carries the tokens (for header-mode clients); this page keeps none of them.
  $("auth-level").textContent = authLevel(data.access_token);
  setStatus(`signed in as ${data.user.username}`);
  await showMe();
  await listFactors();
}

// How the user signed in, from the claims of the access token in the login answer (RFC 8176
// amr, and aal): for display only, nothing is kept or trusted. The httpOnly cookie is what
// authenticates the page; authsvc and the downstream APIs verify the token. A silent refresh
// keeps the session's amr and aal, so what this shows stays true until the next login.
function authLevel(accessToken) {
  try {
    const payload = accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return `${claims.aal} (${claims.amr.join(", ")})`;
  } catch {
    return "-";
  }
}

// Run ``action`` with ``button`` disabled: a double click sends one request (a second
// /login/mfa with the same mfa_token would only be refused).
async function busy(button, action) {
  $(button).disabled = true;
  try {
    return await action();
  } finally {
    $(button).disabled = false;
  }
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
  $("auth-level").textContent = "-";
  $("sessions").replaceChildren();
  $("factors").replaceChildren();
  $("recovery-left").textContent = "-";
  endSecondStep();
  endEnrolment();
  hideRecoveryCodes();
  setStatus("signed out");
}

// -- second factors (DESIGN §10) -----------------------------------------------------------

// The password was right and the account has a second factor: no tokens yet, but an
// mfa_token (single use, 5 minutes, 5 tries) to send with a code to /login/mfa.
function askForCode(problem) {
  pendingMfa = { token: problem.mfa_token, factors: problem.factors };
  $("mfa-code").value = "";
  // A passkey answers the second step too (passkeys.js), when the account has one.
  $("mfa-passkey").hidden = !problem.factors.some((factor) => factor.type === "passkey");
  $("mfa-step").hidden = false;
  $("mfa-code").focus();
  setStatus("password accepted: enter a code from your authenticator app or a recovery code");
}

async function verifyCode() {
  if (!pendingMfa || $("mfa-verify").disabled) return; // Enter while a try is on its way
  const body = { mfa_token: pendingMfa.token, code: $("mfa-code").value.trim() };
  const response = await busy("mfa-verify", () => call("/login/mfa", { method: "POST", body }));
  if (!response.ok) {
    // A wrong code (invalid_code) leaves the mfa_token usable for another try; a spent,
    // expired or exhausted one (invalid_token) means logging in with the password again.
    if ((await problemCode(response)) === "invalid_token") endSecondStep();
    return report(response);
  }
  endSecondStep();
  await signedIn(await response.json()); // the cookies are set like /login sets them
}

function endSecondStep() {
  pendingMfa = null;
  $("mfa-code").value = "";
  $("mfa-step").hidden = true;
}

function cancelSecondStep() {
  endSecondStep();
  setStatus("signed out");
}

async function listFactors() {
  const response = await authed("/mfa");
  if (!response.ok) return report(response);
  const { factors, recovery_codes_left: left } = await response.json();
  const list = $("factors");
  list.replaceChildren();
  for (const factor of factors) {
    const item = document.createElement("li");
    item.dataset.factorId = factor.id;
    item.dataset.type = factor.type;
    const used = factor.last_used_at ? `last used ${factor.last_used_at}` : "never used";
    item.append(`${factor.type} · added ${factor.created_at} · ${used} `);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-factor";
    remove.textContent = "Remove";
    remove.addEventListener("click", guard(() => removeFactor(factor.id)));
    item.append(remove);
    list.append(item);
  }
  $("recovery-left").textContent = String(left);
}

// The QR code comes as SVG markup (segno's, made by authsvc). It is shown as an <img> whose
// source is that markup, never as markup in this document: an SVG *image* runs no script,
// fires no event handler, follows no link and loads nothing else, whatever the markup holds,
// so the page does not have to trust or sanitize it. Parsed into the page instead (innerHTML,
// or DOMParser + importNode), it would be live SVG, where on* attributes, javascript: links,
// <foreignObject> and external <image> references all work. segno's inline form leaves out
// the SVG namespace, which HTML does not need but a standalone SVG document does.
function qrImage(markup) {
  let svg = markup.trim();
  if (!/^<svg\b[^>]*\sxmlns=/.test(svg)) {
    svg = svg.replace(/^<svg\b/, '<svg xmlns="http://www.w3.org/2000/svg"');
  }
  const image = document.createElement("img");
  image.id = "totp-qr-image";
  image.alt = "QR code for your authenticator app";
  image.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
  return image;
}

async function startTotp() {
  const body = { current_password: $("totp-password").value };
  const response = await busy("totp-start", () => authed("/mfa/totp", { method: "POST", body }));
  if (response.status !== 201) return report(response);
  const data = await response.json();
  $("totp-password").value = "";
  enrolment = data.id;
  hideRecoveryCodes();
  $("totp-qr").replaceChildren(qrImage(data.qr_svg));
  $("totp-secret").textContent = data.secret;
  // On a phone, the link opens the authenticator app. Only an otpauth: URI becomes a link.
  if (data.otpauth_uri.startsWith("otpauth://")) $("totp-uri").href = data.otpauth_uri;
  $("totp-code").value = "";
  $("totp-enrol").hidden = false;
  setStatus("scan the QR code, then confirm with the code the app shows");
}

async function confirmTotp() {
  if (!enrolment) return;
  const path = `/mfa/totp/${encodeURIComponent(enrolment)}/confirm`;
  const body = { code: $("totp-code").value.trim() };
  const response = await busy("totp-confirm", () => authed(path, { method: "POST", body }));
  if (!response.ok) return report(response);
  const { recovery_codes: codes } = await response.json();
  endEnrolment(); // the secret leaves the page: it lives in the app now
  showRecoveryCodes(codes);
  setStatus("authenticator app added: logins now ask for a code");
  await listFactors();
}

function endEnrolment() {
  enrolment = null;
  $("totp-enrol").hidden = true;
  $("totp-qr").replaceChildren();
  $("totp-secret").textContent = "";
  $("totp-uri").removeAttribute("href");
  $("totp-code").value = "";
}

// Shown once (authsvc keeps only their digests) until "I have saved them" or logout.
function showRecoveryCodes(codes) {
  $("recovery-codes").replaceChildren(
    ...codes.map((code) => {
      const item = document.createElement("li");
      item.textContent = code;
      return item;
    }),
  );
  $("recovery").hidden = false;
}

function hideRecoveryCodes() {
  $("recovery-codes").replaceChildren();
  $("recovery").hidden = true;
}

function reauthWithCode() {
  return { current_password: $("factor-password").value, code: $("factor-code").value.trim() };
}

function clearReauth() {
  $("factor-password").value = "";
  $("factor-code").value = "";
}

async function removeFactor(id) {
  const body = reauthWithCode();
  const response = await authed(`/mfa/${encodeURIComponent(id)}`, { method: "DELETE", body });
  if (response.status !== 204) return report(response);
  clearReauth();
  setStatus("factor removed");
  await listFactors();
}

async function replaceRecoveryCodes() {
  const body = reauthWithCode();
  const response = await busy("new-recovery-codes", () =>
    authed("/mfa/recovery-codes", { method: "POST", body }),
  );
  if (!response.ok) return report(response);
  clearReauth();
  showRecoveryCodes((await response.json()).recovery_codes);
  setStatus("new recovery codes: the old ones no longer work");
  await listFactors();
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
$("mfa-verify").addEventListener("click", guard(verifyCode));
$("mfa-code").addEventListener("keydown", (event) => {
  if (event.key === "Enter") guard(verifyCode)();
});
$("mfa-cancel").addEventListener("click", cancelSecondStep);
$("list-factors").addEventListener("click", guard(listFactors));
$("totp-start").addEventListener("click", guard(startTotp));
$("totp-confirm").addEventListener("click", guard(confirmTotp));
$("recovery-done").addEventListener("click", hideRecoveryCodes);
$("new-recovery-codes").addEventListener("click", guard(replaceRecoveryCodes));
showLink();
