// Runs before the page is drawn (a classic script in <head>): applies the remembered theme so
// a dark page never flashes light. ui/theme.js owns the toggle; both read the same key.
(function () {
  var choice = "system";
  try {
    choice = localStorage.getItem("webchat.theme") || "system";
  } catch (e) {
    choice = "system";
  }
  if (choice !== "light" && choice !== "dark") choice = "system";
  var dark =
    choice === "dark" ||
    (choice === "system" && window.matchMedia && matchMedia("(prefers-color-scheme: dark)").matches);
  document.documentElement.dataset.themeChoice = choice;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
})();
