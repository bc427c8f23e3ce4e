// Tag suggestions for the search box: when the word being typed starts with "tag:", offer the
// collection's most used tags with that prefix (from /api/v1/tags) in the box's datalist.
(function () {
  "use strict";
  const input = document.getElementById("q");
  const list = document.getElementById("tag-suggestions");
  if (!input || !list) return;
  let pending = null;
  input.addEventListener("input", function () {
    const words = input.value.split(/\s+/);
    const last = words[words.length - 1] || "";
    if (!last.toLowerCase().startsWith("tag:")) { list.replaceChildren(); return; }
    const head = words.slice(0, -1).join(" ");
    clearTimeout(pending);
    pending = setTimeout(function () {
      const url = input.dataset.tagsUrl + "?limit=8&prefix=" + encodeURIComponent(last.slice(4));
      fetch(url, { headers: { Accept: "application/json" } })
        .then(function (response) { return response.ok ? response.json() : []; })
        .then(function (tags) {
          list.replaceChildren(...tags.map(function (item) {
            const option = document.createElement("option");
            const tag = item.tag.includes(" ") ? 'tag:"' + item.tag + '"' : "tag:" + item.tag;
            option.value = (head ? head + " " : "") + tag + " ";
            option.label = item.tag + " (" + item.images + ")";
            return option;
          }));
        })
        .catch(function () { list.replaceChildren(); });
    }, 120);
  });
})();
