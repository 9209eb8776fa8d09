// Passkeys (WebAuthn): registering one on the passkeys page, signing in with one on the login
// page, and answering a decision's challenge in the approvals inbox and on a query's page. The
// challenge of a decision is SHA-256 of its approval message, computed by the server and handed
// over in the form's data attributes; a sign-in's is random, from the server. The assertion
// goes back in the form's hidden `assertion` field.
(function () {
  "use strict";

  function fromB64url(text) {
    var base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base64.length % 4) base64 += "=";
    var binary = atob(base64);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function say(form, text) {
    var status = form.querySelector("[data-passkey-status]");
    if (status) status.textContent = text;
  }

  function csrf(form) {
    return form.querySelector("input[name=csrfmiddlewaretoken]").value;
  }

  // The assertion as the server reads it (py_webauthn's JSON of a PublicKeyCredential).
  function assertionJson(credential) {
    return JSON.stringify({
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toB64url(credential.response.authenticatorData),
        clientDataJSON: toB64url(credential.response.clientDataJSON),
        signature: toB64url(credential.response.signature),
        userHandle: credential.response.userHandle ? toB64url(credential.response.userHandle) : null,
      },
      clientExtensionResults: credential.getClientExtensionResults(),
    });
  }

  // Sign-in: ask the server for a challenge, let the browser offer this site's passkeys.
  var signIn = document.getElementById("passkey-sign-in");
  if (signIn) {
    signIn.addEventListener("submit", function (event) {
      if (signIn.elements.assertion.value) return;  // answered: send it
      event.preventDefault();
      if (!window.PublicKeyCredential) {
        say(signIn, "This browser does not support passkeys.");
        return;
      }
      fetch(signIn.dataset.optionsUrl, {
        method: "POST",
        headers: { "X-CSRFToken": csrf(signIn) },
        credentials: "same-origin",
      })
        .then(function (response) { return response.json(); })
        .then(function (options) {
          options.challenge = fromB64url(options.challenge);
          (options.allowCredentials || []).forEach(function (c) { c.id = fromB64url(c.id); });
          say(signIn, "Follow your browser's passkey prompt…");
          return navigator.credentials.get({ publicKey: options });
        })
        .then(function (credential) {
          signIn.elements.assertion.value = assertionJson(credential);
          signIn.submit();
        })
        .catch(function (error) { say(signIn, "Not signed in: " + error.message); });
    });
  }

  // Registration: ask the server for options, let the browser create the credential, post it.
  var register = document.getElementById("passkey-register");
  if (register) {
    register.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!window.PublicKeyCredential) {
        say(register, "This browser does not support passkeys.");
        return;
      }
      var body = new FormData();
      body.append("organization", register.elements.organization.value);
      fetch(register.dataset.optionsUrl, {
        method: "POST",
        body: body,
        headers: { "X-CSRFToken": csrf(register) },
        credentials: "same-origin",
      })
        .then(function (response) { return response.json(); })
        .then(function (options) {
          if (options.error) throw new Error(options.error);
          options.challenge = fromB64url(options.challenge);
          options.user.id = fromB64url(options.user.id);
          (options.excludeCredentials || []).forEach(function (c) { c.id = fromB64url(c.id); });
          say(register, "Follow your browser's passkey prompt…");
          return navigator.credentials.create({ publicKey: options });
        })
        .then(function (credential) {
          register.elements.credential.value = JSON.stringify({
            id: credential.id,
            rawId: toB64url(credential.rawId),
            type: credential.type,
            response: {
              clientDataJSON: toB64url(credential.response.clientDataJSON),
              attestationObject: toB64url(credential.response.attestationObject),
              transports: credential.response.getTransports ? credential.response.getTransports() : [],
            },
            clientExtensionResults: credential.getClientExtensionResults(),
          });
          register.submit();
        })
        .catch(function (error) { say(register, "No passkey was registered: " + error.message); });
    });
  }

  // Decisions: the clicked button's decision picks its challenge; the passkey signs it.
  document.querySelectorAll("form[data-passkey-decision]").forEach(function (form) {
    var decision = null;
    form.querySelectorAll("button[name=decision]").forEach(function (button) {
      button.addEventListener("click", function () { decision = button.value; });
    });
    form.addEventListener("submit", function (event) {
      if (form.elements.assertion.value) return;  // answered: send it
      event.preventDefault();
      decision = decision || "approve";
      if (!window.PublicKeyCredential) {
        say(form, "This browser does not support passkeys.");
        return;
      }
      var allow = JSON.parse(form.dataset.credentials || "[]").map(function (id) {
        return { type: "public-key", id: fromB64url(id) };
      });
      say(form, "Confirm the " + decision + " with your passkey…");
      navigator.credentials.get({
        publicKey: {
          challenge: fromB64url(form.dataset[decision + "Challenge"]),
          rpId: form.dataset.rpId,
          allowCredentials: allow,
          userVerification: "required",
        },
      }).then(function (credential) {
        form.elements.assertion.value = assertionJson(credential);
        var chosen = document.createElement("input");
        chosen.type = "hidden";
        chosen.name = "decision";
        chosen.value = decision;
        form.appendChild(chosen);
        form.submit();
      }).catch(function (error) { say(form, "Not decided: " + error.message); });
    });
  });
})();
