// On a phone, course.css lets a wide figure scroll sideways inside its cell output. A box that
// scrolls must be reachable from the keyboard (WCAG 2.1.1; axe-core: scrollable-region-focusable).
// The theme does this for code blocks and its own output boxes, not for MyST-NB's figure outputs:
// like the theme, give such a box a tab stop while, and only while, it actually scrolls.
(() => {
  const update = () => {
    for (const box of document.querySelectorAll("div.cell_output")) {
      if (box.scrollWidth > box.clientWidth || box.scrollHeight > box.clientHeight) {
        box.tabIndex = 0;
      } else {
        box.removeAttribute("tabindex");
      }
    }
  };
  let pending = null;
  const later = () => {
    clearTimeout(pending);
    pending = setTimeout(update, 200);
  };
  document.addEventListener("DOMContentLoaded", update);
  window.addEventListener("load", update);
  window.addEventListener("resize", later);
})();
