// Submits a select's form when its choice changes (<select data-autosubmit>). A file, not an inline
// handler, so the Content-Security-Policy can forbid inline scripts.
document.addEventListener("change", (event) => {
  const target = event.target;
  if (target instanceof HTMLSelectElement && target.dataset.autosubmit !== undefined && target.form) {
    target.form.submit();
  }
});
