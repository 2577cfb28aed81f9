/* gba_lens feature dashboard: renders the index or a feature page from the JSON inlined in the
   page (<script type="application/json" id="dashboard-data">). No network, works from file://.
   Index URL state: #sort=<column>-<asc|desc>&q=<filter text>&group=<k>&alive=1 (read at load and
   on every change, so a link or a test can open a sorted / filtered view).
   A "bundle" (gba_lens.dashboard.show) holds the index and several feature pages in one document,
   shown in a notebook through an iframe srcdoc. There the view state is kept in memory, not in
   the URL (a srcdoc document resolves "#..." links against the notebook's URL), and links switch
   views in place. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("dashboard-data").textContent);
  var META = DATA.meta;
  var BUNDLE = DATA.kind === "bundle";
  var root = document.getElementById("app");
  var HAS_PAGE = {};  // features with a page (the index links only those)
  (META.pages || []).forEach(function (id) { HAS_PAGE[id] = true; });

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    for (var key in attrs || {}) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "html") node.innerHTML = attrs[key];
      else node.setAttribute(key, attrs[key]);
    }
    (children || []).forEach(function (c) { if (c != null) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    return node;
  }
  function pct(x) { return x == null ? "" : (100 * x).toPrecision(3) + "%"; }
  function num(x) { return x == null ? "" : Number(x).toPrecision(3); }
  function pad(i) { var s = String(i); while (s.length < 5) s = "0" + s; return s; }
  function featureHref(id) { return BUNDLE ? "#feature=" + id : "feature_" + pad(id) + ".html"; }
  function indexHref() { return BUNDLE ? "#" : "index.html"; }
  function showTok(s) { return s.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5"); }
  var HASH = BUNDLE ? "" : null;  // the bundle's in-memory "URL hash"
  function getHash() { return BUNDLE ? HASH : location.hash.replace(/^#/, ""); }
  function hashParams() {
    var out = {};
    getHash().split("&").forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf("=");
      out[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] = i < 0 ? "" : decodeURIComponent(kv.slice(i + 1));
    });
    return out;
  }
  function setHash(params) {
    var parts = [];
    for (var k in params) if (params[k] !== "" && params[k] != null) parts.push(k + "=" + encodeURIComponent(params[k]));
    if (BUNDLE) { HASH = parts.join("&"); return; }
    try { history.replaceState(null, "", "#" + parts.join("&")); } catch (e) { location.hash = parts.join("&"); }
  }
  function header(title, sub, back) {
    return el("header", {}, [
      el("h1", {}, [back ? el("a", { href: indexHref(), id: "back" }, ["\u2190 index"]) : null, back ? " " : null, title]),
      el("div", { class: "sub", text: sub }),
    ]);
  }
  function subtitle() {
    return META.model + " \u00b7 " + META.hook + " \u00b7 " + META.sae.architecture + " SAE, d_sae=" + META.sae.d_sae +
      " \u00b7 " + META.n_tokens.toLocaleString() + " tokens";
  }

  /* ------------------------------------------------------------------ index */
  var COLUMNS = [
    { key: "id", label: "feature", fmt: function (r) { return HAS_PAGE[r.id] ? el("a", { href: featureHref(r.id) }, ["#" + r.id]) : el("span", { text: "#" + r.id }); } },
    { key: "freq", label: "frequency", fmt: function (r) { return pct(r.freq); } },
    { key: "group", label: "group", gba: true, fmt: function (r) { return r.group == null ? "" : String(r.group); } },
    { key: "target", label: "target", gba: true, fmt: function (r) { return pct(r.target); } },
    { key: "ratio", label: "freq/target", gba: true, fmt: function (r) { return r.ratio == null ? "" : num(r.ratio); } },
    { key: "mean", label: "mean act", fmt: function (r) { return num(r.mean); } },
    { key: "max", label: "max act", fmt: function (r) { return num(r.max); } },
    { key: "flags", label: "flags", text: true, fmt: function (r) {
      return el("span", {}, [r.dead ? el("span", { class: "flag dead", text: "dead" }) : null,
                             r.dense ? el("span", { class: "flag dense", text: "dense" }) : null]); } },
    { key: "top", label: "top tokens", text: true, fmt: function (r) { return el("span", { class: "tok", text: showTok(r.top) }); } },
    { key: "logits", label: "top logits", text: true, fmt: function (r) { return el("span", { class: "tok", text: showTok(r.logits || "") }); } },
  ];

  function renderIndex() {
    var rows = DATA.index;
    var cols = COLUMNS.filter(function (c) { return !c.gba || META.gba; });
    var state = hashParams();
    var limit = 2000;
    var search = el("input", { type: "search", id: "filter", placeholder: "filter: feature id or token text" });
    var alive = el("input", { type: "checkbox", id: "alive" });
    var groupSel = null;
    if (META.gba) {
      groupSel = el("select", { id: "group" }, [el("option", { value: "", text: "all groups" })]);
      META.gba.targets.forEach(function (t, k) { groupSel.appendChild(el("option", { value: String(k), text: "group " + k + " (target " + pct(t) + ")" })); });
    }
    var count = el("span", { class: "note", id: "count" });
    var thead = el("tr");
    var tbody = el("tbody");
    cols.forEach(function (c) {
      var th = el("th", { "data-key": c.key, class: c.text ? "text" : "", text: c.label });
      th.addEventListener("click", function () {
        var s = hashParams(), cur = (s.sort || "").split("-");
        var dir = cur[0] === c.key && cur[1] === "desc" ? "asc" : "desc";
        s.sort = c.key + "-" + dir;
        setHash(s);
        update();
      });
      thead.appendChild(th);
    });
    function update() {
      var s = hashParams();
      search.value = s.q || "";
      alive.checked = s.alive === "1";
      if (groupSel) groupSel.value = s.group || "";
      var sort = (s.sort || "id-asc").split("-"), key = sort[0], dir = sort[1] === "desc" ? -1 : 1;
      var q = (s.q || "").toLowerCase();
      var shown = rows.filter(function (r) {
        if (s.alive === "1" && r.dead) return false;
        if (s.group !== undefined && s.group !== "" && String(r.group) !== s.group) return false;
        if (!q) return true;
        return String(r.id) === q || (r.top || "").toLowerCase().indexOf(q) >= 0 || (r.logits || "").toLowerCase().indexOf(q) >= 0;
      });
      shown.sort(function (a, b) {
        var x = key === "flags" ? (a.dead ? 2 : 0) + (a.dense ? 1 : 0) : a[key];
        var y = key === "flags" ? (b.dead ? 2 : 0) + (b.dense ? 1 : 0) : b[key];
        if (x == null && y == null) return a.id - b.id;
        if (x == null) return 1;
        if (y == null) return -1;
        if (x < y) return -dir;
        if (x > y) return dir;
        return a.id - b.id;
      });
      thead.querySelectorAll("th").forEach(function (th) {
        th.className = (th.getAttribute("data-key") === key ? "sorted-" + (dir < 0 ? "desc" : "asc") : "") +
          (cols.filter(function (c) { return c.key === th.getAttribute("data-key"); })[0].text ? " text" : "");
      });
      tbody.innerHTML = "";
      shown.slice(0, limit).forEach(function (r) {
        var tr = el("tr", { "data-id": String(r.id) });
        cols.forEach(function (c) { tr.appendChild(el("td", { class: c.text ? "text" : "" }, [c.fmt(r)])); });
        tbody.appendChild(tr);
      });
      count.textContent = shown.length + " of " + rows.length + " features" + (shown.length > limit ? " (first " + limit + " shown)" : "");
    }
    function onControl() {
      var s = hashParams();
      s.q = search.value; s.alive = alive.checked ? "1" : "";
      if (groupSel) s.group = groupSel.value;
      setHash(s);
      update();
    }
    search.addEventListener("input", onControl);
    alive.addEventListener("change", onControl);
    if (groupSel) groupSel.addEventListener("change", onControl);
    root.appendChild(header("Feature dashboard", subtitle(), false));
    var summary = META.summary;
    root.appendChild(el("main", {}, [
      el("p", { class: "note", text: summary.alive + " features fire, " + summary.dead + " dead, " + summary.dense +
        " dense (frequency > " + pct(META.dense_threshold) + "). Click a column to sort; click a feature for its page." }),
      el("div", { class: "controls" }, [search, el("label", {}, [alive, " hide dead"]), groupSel, count]),
      el("table", { id: "features" }, [el("thead", {}, [thead]), tbody]),
    ]));
    if (!BUNDLE) window.addEventListener("hashchange", update);
    update();
  }

  /* ------------------------------------------------------------------ feature page */
  function context(item, vocab, maxAct, vmax) {
    var div = el("div", { class: "ctx" }, [el("span", { class: "val", text: num(item.v) })]);
    item.t.forEach(function (tok, i) {
      var a = item.a[i];
      var alpha = maxAct > 0 ? Math.max(0, Math.min(1, a / maxAct)) : 0;
      var span = el("span", { class: "t" + (i === item.at ? " max" : ""), title: vocab[tok] + " : " + num(a),
                              style: "background: rgba(255, 128, 0, " + alpha.toFixed(3) + ")", "data-act": String(a) });
      span.textContent = showTok(vocab[tok]);
      div.appendChild(span);
    });
    return div;
  }

  function histogram(f) {
    var W = 320, H = 120, all = f.hist.counts, used = all.length;
    while (used > 1 && !all[used - 1]) used--;  // the range is a power of two above the max: trim
    var counts = all.slice(0, used), n = used, hi = f.hist.range * used / all.length;
    var top = Math.max.apply(null, counts.concat([1]));
    var box = svg("svg", { width: W, height: H + 18, id: "histogram", viewBox: "0 0 " + W + " " + (H + 18) });
    counts.forEach(function (c, i) {
      var h = (c / top) * H;
      box.appendChild(svg("rect", { x: (i * W) / n, y: H - h, width: Math.max(1, W / n - 1), height: h, fill: "#e07b00" }));
    });
    box.appendChild(svg("line", { x1: 0, y1: H, x2: W, y2: H, stroke: "#555" }));
    var left = svg("text", { x: 0, y: H + 14, "font-size": 11 }); left.textContent = "0";
    var right = svg("text", { x: W, y: H + 14, "font-size": 11, "text-anchor": "end" }); right.textContent = num(hi);
    box.appendChild(left); box.appendChild(right);
    return box;
  }

  function freqBars(f) {
    if (f.target == null) return el("p", { text: "Fires on " + pct(f.freq) + " of tokens." });
    var W = 320, lo = -6, hi = 0;
    function x(p) { return W * (Math.log10(Math.max(p, 1e-6)) - lo) / (hi - lo); }
    var box = svg("svg", { width: W, height: 60, id: "freq-vs-target" });
    [["this feature", f.freq, "#1a6fb0", 4], ["group mean", f.group_freq, "#8fb8dc", 24]].forEach(function (b) {
      box.appendChild(svg("rect", { x: 0, y: b[3], width: x(b[1]), height: 14, fill: b[2] }));
    });
    box.appendChild(svg("line", { x1: x(f.target), y1: 0, x2: x(f.target), y2: 42, stroke: "#c0392b", "stroke-width": 2 }));
    var t = svg("text", { x: 2, y: 56, "font-size": 11 }); t.textContent = "log scale 1e-6 \u2026 1; red line: group target";
    box.appendChild(t);
    return el("div", {}, [
      el("p", { text: "Fires on " + pct(f.freq) + " of tokens; group " + f.group + " target " + pct(f.target) +
        " (\u00d7" + num(f.freq / f.target) + "), group mean " + pct(f.group_freq) + "." }), box]);
  }

  function renderFeature(f) {
    var title = "Feature #" + f.id;
    document.title = title + " \u00b7 " + META.hook;
    root.appendChild(header(title, subtitle(), true));
    var stats = el("table", { class: "stats" }, [
      ["frequency", pct(f.freq) + " (" + f.count.toLocaleString() + " tokens)"], ["mean activation (when firing)", num(f.mean)],
      ["max activation", num(f.max)], ["GBA group", f.group == null ? "\u2014" : f.group + " (target " + pct(f.target) + ")"],
      ["flags", (f.dead ? "dead " : "") + (f.dense ? "dense" : "") || "\u2014"],
    ].map(function (r) { return el("tr", {}, [el("td", { text: r[0] }), el("td", { text: r[1] })]); }));
    var topCard = el("div", { class: "card", id: "top-contexts" }, [el("h2", { text: "Top activations" })]);
    if (!f.top.length) topCard.appendChild(el("p", { class: "note", text: "This feature never fired on these tokens." }));
    f.top.forEach(function (c) { topCard.appendChild(context(c, f.vocab, f.max)); });
    var bandCard = el("div", { class: "card", id: "band-samples" }, [el("h2", { text: "Samples by activation band" })]);
    f.bands.slice().reverse().forEach(function (b) {
      if (!b.samples.length) return;
      bandCard.appendChild(el("h3", { text: "activation " + num(b.lo) + " \u2013 " + num(b.hi) + ": " + b.count.toLocaleString() +
        " tokens (quantiles " + pct(b.q_lo) + " \u2013 " + pct(b.q_hi) + ")" }));
      b.samples.forEach(function (c) { bandCard.appendChild(context(c, f.vocab, f.max)); });
    });
    var side = [el("div", { class: "card" }, [el("h2", { text: "Summary" }), stats]),
                el("div", { class: "card" }, [el("h2", { text: "Activation histogram (firing tokens)" }), histogram(f)]),
                el("div", { class: "card" }, [el("h2", { text: "Frequency vs group target" }), freqBars(f)])];
    if (f.logits) {
      var rows = [];
      for (var i = 0; i < Math.max(f.logits.pos.length, f.logits.neg.length); i++) {
        var p = f.logits.pos[i], n = f.logits.neg[i];
        rows.push(el("tr", {}, [el("td", { class: "text neg tok", text: n ? showTok(n[0]) : "" }), el("td", { class: "neg", text: n ? num(n[1]) : "" }),
                                el("td", { class: "text pos tok", text: p ? showTok(p[0]) : "" }), el("td", { class: "pos", text: p ? num(p[1]) : "" })]));
      }
      side.push(el("div", { class: "card", id: "logits" }, [el("h2", { text: "Logit effect (decoder \u00b7 W_U)" }),
        el("table", { class: "logits" }, [el("tr", {}, [el("th", { class: "text", text: "negative" }), el("th"), el("th", { class: "text", text: "positive" }), el("th")])].concat(rows))]));
    }
    if (f.nearest && f.nearest.length) {
      side.push(el("div", { class: "card", id: "nearest" }, [el("h2", { text: "Nearest features (decoder cosine)" }),
        el("table", {}, f.nearest.map(function (n) {
          return el("tr", {}, [el("td", {}, [n[3] ? el("a", { href: featureHref(n[0]) }, ["#" + n[0]]) : "#" + n[0]]), el("td", { text: num(n[1]) }), el("td", { class: "text tok", text: showTok(n[2] || "") })]);
        }))]));
    }
    if (f.steer) {
      side.push(el("div", { class: "card", id: "steering" }, [el("h2", { text: "Steering preview" }),
        el("p", { class: "note", text: "Greedy continuation of the prompt with " + num(f.steer.coefficient) + " \u00d7 the decoder direction added at " + META.hook + " (" + META.steering.strength + " \u00d7 max activation)." }),
        el("h3", { text: "without steering" }), el("pre", { class: "gen", text: META.steering.clean }),
        el("h3", { text: "with feature #" + f.id }), el("pre", { class: "gen", text: f.steer.text })]));
    }
    root.appendChild(el("main", {}, [el("div", { class: "grid" }, [el("div", {}, side), el("div", {}, [topCard, bandCard])])]));
  }

  function route() {
    root.innerHTML = "";
    if (DATA.kind === "index") return renderIndex();
    if (DATA.kind === "feature") return renderFeature(DATA.feature);
    var m = /feature=(\d+)/.exec(getHash());
    if (m && DATA.features[m[1]]) return renderFeature(DATA.features[m[1]]);
    if (m) { root.appendChild(el("p", { text: "Feature #" + m[1] + " is not in this view; open the full dashboard directory." })); return; }
    renderIndex();
  }
  if (BUNDLE) {
    if (DATA.start != null) HASH = "feature=" + DATA.start;
    document.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a") : null;
      var href = link && link.getAttribute("href");
      if (!href || href.charAt(0) !== "#") return;
      event.preventDefault();
      HASH = href.slice(1);
      route();
      window.scrollTo(0, 0);
    });
  }
  route();
})();
