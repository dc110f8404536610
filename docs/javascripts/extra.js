// Keep "mean ± std" table cells (e.g. `89.37 ± 0.09`) on one line; see stylesheets/extra.css.
document$.subscribe(function () {
  var pattern = /^\s*-?[\d.,]+\s*%?\s*±\s*[\d.,]+\s*%?\s*$/;
  document.querySelectorAll(".md-typeset table td").forEach(function (cell) {
    if (pattern.test(cell.textContent)) {
      cell.classList.add("ltp-nowrap");
    }
  });
});
