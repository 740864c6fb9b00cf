// Test page glue: exposes /static/markdown.js as window.md and records CSP violations.
window.__csp = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.violatedDirective} ${event.blockedURI} ${event.sample}`);
});

const md = await import("/static/markdown.js");
window.md = md;
document.documentElement.dataset.ready = "true";
