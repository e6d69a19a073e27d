// Progressive enhancement of the errors page: "select all", and the bulk buttons enabled only when
// every ticked row allows the action (the server checks again; without JavaScript it is the judge).
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("selection");
  if (!form) return;
  const boxes = () => [...form.querySelectorAll('input[name="coupling"]')];
  const bulk = [...form.querySelectorAll("[data-bulk] button[data-action]")];
  const update = () => {
    const ticked = boxes().filter((b) => b.checked);
    for (const button of bulk) {
      const kind = button.dataset.action;
      const ok = ticked.length > 0 && ticked.every((b) => b.dataset.allowed.split(" ").includes(kind));
      button.disabled = !ok;
      button.title = ok ? "" : ticked.length ? "not allowed for every selected record" : "select records first";
    }
  };
  form.querySelector("[data-select-all]")?.addEventListener("change", (e) => {
    for (const b of boxes()) b.checked = e.target.checked;
    update();
  });
  form.addEventListener("change", update);
  update();
});
