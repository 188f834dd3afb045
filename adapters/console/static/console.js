// subledger console: the one script. "Copy reply" puts the invoice's markdown explanation on
// the clipboard; everything else works without JavaScript.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      const status = document.getElementById("copy-status");
      const text = source.value;
      let copied = false;
      try {
        await navigator.clipboard.writeText(text);
        copied = true;
      } catch (_) {
        source.focus();
        source.select();
        copied = document.execCommand && document.execCommand("copy");
      }
      button.dataset.copied = copied ? "true" : "false";
      if (status) {
        status.textContent = copied ? "Reply copied to the clipboard." : "Select the text above and copy it.";
      }
    });
  }
});
