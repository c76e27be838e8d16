// The new-referral form: the receiving institutions offered follow the chosen direction
// (each option carries data-direction; the server checks the same rule on submit).
(function () {
  "use strict";
  var direction = document.getElementById("id_direction");
  var target = document.getElementById("id_to_institution");
  if (!direction || !target) { return; }
  function filter() {
    var wanted = direction.value;
    Array.prototype.forEach.call(target.options, function (option) {
      var fits = !option.value || option.getAttribute("data-direction") === wanted;
      option.hidden = !fits;
      option.disabled = !fits;
      if (!fits && option.selected) { target.value = ""; }
    });
  }
  direction.addEventListener("change", filter);
  filter();
}());
