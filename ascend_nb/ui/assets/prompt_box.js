export default {
  render({ model, el }) {
    const box = document.createElement("textarea");
    box.className = "anb-chat-prompt";
    box.rows = 2;
    const pull = () => {
      if (box.value !== model.get("value")) box.value = model.get("value");
      box.placeholder = model.get("placeholder");
      box.disabled = model.get("disabled");
    };
    const push = () => { model.set("value", box.value); model.save_changes(); };
    box.addEventListener("input", push);
    // keys typed here are text, not JupyterLab shortcuts (as in ipywidgets' own text boxes)
    for (const kind of ["keypress", "keyup"]) box.addEventListener(kind, (event) => event.stopPropagation());
    box.addEventListener("keydown", (event) => {
      event.stopPropagation();
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      push();
      model.send({ event: "submit" });
    });
    model.on("change", pull);
    pull();
    el.appendChild(box);
    return () => model.off("change", pull);
  },
};
