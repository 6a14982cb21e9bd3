// Passkeys (WebAuthn, DESIGN §10). authsvc speaks WebAuthn's own JSON: its options go
// through PublicKeyCredential.parse{Creation,Request}OptionsFromJSON into navigator.credentials,
// and the credential goes back as credential.toJSON(). Uses call/authed/report/setStatus and
// signedIn from app.js (loaded first).
"use strict";

// A browser refusal (no passkey chosen, none on this device, user verification failed...) is
// a DOMException, not a network error: say which.
function passkeyGuard(action) {
  return () =>
    action().catch((error) => {
      const name = error instanceof DOMException ? error.name : "network error";
      setStatus(`passkey: ${name}: ${error.message}`, true);
    });
}

function passkeysSupported() {
  if (window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON) return true;
  setStatus("this browser cannot use passkeys here (WebAuthn JSON support missing)", true);
  return false;
}

// Add a passkey to the signed-in account; the current password (the field above) is asked
// for, so that a stolen session alone cannot add a factor.
async function registerPasskey() {
  if (!passkeysSupported()) return;
  const body = { current_password: $("password").value };
  const options = await authed("/webauthn/register/options", { method: "POST", body });
  if (!options.ok) return report(options);
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(await options.json());
  const credential = await navigator.credentials.create({ publicKey });
  const response = await authed("/webauthn/register", {
    method: "POST",
    body: credential.toJSON(),
  });
  if (!response.ok) return report(response);
  const passkey = await response.json();
  // A first factor comes with the account's recovery codes, shown this once.
  if (passkey.recovery_codes) showRecoveryCodes(passkey.recovery_codes);
  setStatus(`passkey registered (${passkey.id})`);
  if (typeof listFactors === "function") await listFactors();
}

// A passwordless login: a discoverable credential, whoever's it is.
async function loginWithPasskey() {
  if (!passkeysSupported()) return;
  const options = await call("/webauthn/login/options", { method: "POST" });
  if (!options.ok) return report(options);
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(await options.json());
  const credential = await navigator.credentials.get({ publicKey });
  const response = await call("/webauthn/login", { method: "POST", body: credential.toJSON() });
  if (!response.ok) return report(response);
  await signedIn(await response.json()); // the cookies are set as /login sets them
}

// The second step of a password login with a passkey: options naming the account's passkeys
// (for the mfa_token; each request is one of its tries), then the assertion to /login/mfa.
async function secondStepWithPasskey() {
  if (!pendingMfa || !passkeysSupported()) return;
  const token = pendingMfa.token;
  const options = await call("/webauthn/mfa/options", { method: "POST", body: { mfa_token: token } });
  if (!options.ok) return report(options);
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(await options.json());
  const credential = await navigator.credentials.get({ publicKey });
  const body = { mfa_token: token, credential: credential.toJSON() };
  const response = await call("/login/mfa", { method: "POST", body });
  if (!response.ok) {
    if ((await problemCode(response)) === "invalid_token") endSecondStep();
    return report(response);
  }
  endSecondStep();
  await signedIn(await response.json());
}

$("mfa-passkey").addEventListener("click", passkeyGuard(secondStepWithPasskey));
$("passkey-register").addEventListener("click", passkeyGuard(registerPasskey));
$("passkey-login").addEventListener("click", passkeyGuard(loginWithPasskey));
