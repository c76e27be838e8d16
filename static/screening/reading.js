// The screening form: choosing a saved viewer measurement shows its length in the axis field
// beside it (the server takes the measurement's length either way).
document.addEventListener("change", (event) => {
  const pick = event.target;
  if (!(pick instanceof HTMLSelectElement) || !/-(long|short)_from$/.test(pick.name)) return;
  const axis = document.querySelector(`[name="${pick.name.replace(/_from$/, "_axis")}"]`);
  const length = pick.value ? pick.selectedOptions[0].textContent.split(" mm")[0] : "";
  if (axis) axis.value = length;
});
