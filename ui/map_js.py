"""The Map tab's page script: stamps on hover, and lassos and boxes sent to the server.

Gradio draws the map's Plotly figure (gr.Plot) but passes on none of its events, so this script, in the
page's head, finds the plot (``#map-plot``) whenever one appears and listens to it:

- hover (``plotly_hover``): a card by the pointer shows the galaxy's stamp, id and colour value; stamp and
  id come from the app's ``stamp`` endpoint (``POST {root}/gradio_api/run/stamp``, with the page's own
  cookie and path prefix), the last CACHED of them kept in the page;
- lasso and box (Plotly's own tools, ``dragmode`` "lasso" or "select"): the script draws the outline
  itself and, on release, writes it in map coordinates to the hidden textbox ``#map-shape``, whose change
  runs ``select_on_map`` on the server over every galaxy. Plotly's own selection is not used: it would
  test and restyle every drawn point at each mouse move, hundreds of milliseconds a time at 100,000
  points without a GPU (benchmarks/map.py), and at a million galaxies it could only mark the drawn sample;
- scrolling zooms the map (Plotly's ``scrollZoom``); a double-click shows all of it.

Its style sheet lays out the hover card, the map's galleries (``.map-stamps``: stamps sent at their stored
size, enlarged pixel by pixel) and the selection's outline.
"""

from pathlib import Path

MAP_JS = """
<style>
#map-hover {
  position: fixed; z-index: 1000; pointer-events: none; display: none; width: 168px; padding: 6px;
  background: var(--background-fill-primary, #fff); color: var(--body-text-color, #000);
  border: 1px solid var(--border-color-primary, #ccc); border-radius: 6px;
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.25); font-size: 12px; line-height: 1.3; overflow-wrap: anywhere;
}
#map-hover img { display: block; width: 156px; height: 156px; image-rendering: pixelated; background: #000; }
.map-stamps { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 8px; }
.map-stamps figure { margin: 0; }
.map-stamps img { display: block; width: 100%; aspect-ratio: 1; image-rendering: pixelated; }
.map-stamps figcaption { font-size: 12px; line-height: 1.3; overflow-wrap: anywhere; margin-top: 2px; }
#map-plot .js-plotly-plot { position: relative; }
#map-outline { position: absolute; left: 0; top: 0; pointer-events: none; overflow: visible; }
#map-outline polygon { fill: rgba(255, 127, 14, 0.08); stroke: #333; stroke-width: 1.5; stroke-dasharray: 4; }
</style>
<script>
(() => {
  const PLOT = "#map-plot .js-plotly-plot", SHAPE = "#map-shape textarea", CACHED = 1000, GAP = 16;
  const CLICK = 4;  // pixels: a drag shorter than this is a click, not a selection
  const stamps = new Map();
  let card = null, hovered = null, dragging = false, selected = null;  // selected: map coordinates

  function root() {  // the app's path prefix (root_path), as Gradio's own page works it out
    return new URL(window.gradio_config?.root || "/", location.href).pathname.replace(/\\/$/, "");
  }

  async function stamp(row) {
    if (stamps.has(row)) return stamps.get(row);
    const reply = await fetch(`${root()}/gradio_api/run/stamp`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({data: [row]}),
    });
    if (!reply.ok) throw new Error(`no stamp for row ${row}: HTTP ${reply.status}`);
    const found = (await reply.json()).data[0];
    stamps.set(row, found);
    if (stamps.size > CACHED) stamps.delete(stamps.keys().next().value);
    return found;
  }

  function hoverCard() {
    if (!card) {
      card = document.createElement("div");
      card.id = "map-hover";
      card.append(document.createElement("img"), document.createElement("div"));
      document.body.append(card);
    }
    return card;
  }

  function colourText(plot, point) {
    const label = plot.layout?.meta?.color_by;
    if (!label) return "";
    const value = point["marker.color"];
    const shown = typeof value === "number" ? String(Number(value.toPrecision(4))) : point.data.name;
    return `${label}: ${shown}`;
  }

  function place(box, event, plot) {
    const at = event?.clientX !== undefined ? event : plot.getBoundingClientRect();
    const x = (at.clientX ?? at.left) + GAP, y = (at.clientY ?? at.top) + GAP;
    box.style.left = `${Math.min(x, innerWidth - box.offsetWidth - 4)}px`;
    box.style.top = `${Math.min(y, innerHeight - box.offsetHeight - 4)}px`;
  }

  function hover(plot, event) {
    const point = event.points.find((p) => p.customdata !== undefined);
    if (!point || dragging) return;
    const row = Number(point.customdata), box = hoverCard(), [image, caption] = box.children;
    hovered = row;
    box.dataset.row = "";
    image.removeAttribute("src");
    caption.textContent = `row ${row}`;
    box.style.display = "block";
    place(box, event.event, plot);
    stamp(row).then((found) => {
      if (hovered !== row) return;
      image.src = found.image;
      caption.textContent = [found.id, colourText(plot, point)].filter(Boolean).join(" · ");
      box.dataset.row = String(row);
    }).catch((error) => { if (hovered === row) caption.textContent = String(error.message); });
  }

  function unhover() {
    hovered = null;
    if (card) card.style.display = "none";
  }

  // ---- lasso and box: pixels of the plot area <-> map coordinates ----

  function frame(plot) {
    const area = plot.querySelector(".nsewdrag").getBoundingClientRect();
    const [x0, x1] = plot.layout.xaxis.range, [y0, y1] = plot.layout.yaxis.range;
    return {
      area,
      toMap: ([px, py]) => [x0 + (px - area.left) / area.width * (x1 - x0),
                            y1 - (py - area.top) / area.height * (y1 - y0)],
      toPixel: ([x, y]) => [area.left + (x - x0) / (x1 - x0) * area.width,
                            area.top + (y1 - y) / (y1 - y0) * area.height],
    };
  }

  function outline(plot, corners) {  // the polygon through page pixels ``corners``, over the plot
    let svg = plot.querySelector("#map-outline");
    if (!svg) {
      svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.id = "map-outline";
      svg.append(document.createElementNS("http://www.w3.org/2000/svg", "polygon"));
      plot.append(svg);
    }
    const origin = plot.getBoundingClientRect();
    svg.setAttribute("width", origin.width);
    svg.setAttribute("height", origin.height);
    const points = corners.map(([x, y]) => `${x - origin.left},${y - origin.top}`).join(" ");
    svg.firstChild.setAttribute("points", points);
  }

  function corners(mode, path) {  // a lasso's path, or the box from its first to its last point
    if (mode === "lasso") return path;
    const [[ax, ay], [bx, by]] = [path[0], path[path.length - 1]];
    return [[ax, ay], [bx, ay], [bx, by], [ax, by]];
  }

  function send(shape) {
    const field = document.querySelector(SHAPE);
    if (!field) return;
    shape.at = Date.now();  // a new value each time, so that Gradio's change event fires for a repeat
    field.value = JSON.stringify(shape);
    field.dispatchEvent(new Event("input", {bubbles: true}));
  }

  function startSelection(plot, event) {
    const mode = plot.layout?.dragmode;
    if (event.button !== 0 || !["lasso", "select"].includes(mode) || !event.target.closest(".nsewdrag")) {
      return;
    }
    event.stopPropagation();  // Plotly's own selection never starts
    event.preventDefault();
    dragging = true;
    unhover();
    const map = frame(plot), path = [[event.clientX, event.clientY]];
    const move = (e) => {
      e.stopPropagation();  // no hover cards while drawing
      path.push([e.clientX, e.clientY]);
      outline(plot, corners(mode, path));
    };
    const up = (e) => {
      removeEventListener("mousemove", move, true);
      removeEventListener("mouseup", up, true);
      dragging = false;
      path.push([e.clientX, e.clientY]);
      const xs = path.map((p) => p[0]), ys = path.map((p) => p[1]);
      if (Math.max(...xs) - Math.min(...xs) < CLICK && Math.max(...ys) - Math.min(...ys) < CLICK) {
        if (selected) redrawOutline(plot);  // a click: the selection stays as it was
        else plot.querySelector("#map-outline")?.remove();
        return;
      }
      const [[x0, y0], [x1, y1]] = [map.toMap(path[0]), map.toMap(path[path.length - 1])];
      if (mode === "select") {
        selected = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
        send({range: {x: [x0, x1], y: [y0, y1]}});
      } else if (path.length >= 3) {
        selected = path.map(map.toMap);
        send({lassoPoints: {x: selected.map((p) => p[0]), y: selected.map((p) => p[1])}});
      }
    };
    addEventListener("mousemove", move, true);
    addEventListener("mouseup", up, true);
  }

  function redrawOutline(plot) {  // after a zoom, a pan or a new map: the selection where it now lies
    if (selected && plot.layout?.xaxis?.range && plot.querySelector(".nsewdrag")) {
      outline(plot, selected.map(frame(plot).toPixel));
    }
  }

  function hook(plot) {
    if (plot.dataset.hooked || typeof plot.on !== "function") return;
    plot.dataset.hooked = "true";  // also tells scripts that drive the page that its events are heard
    window.Plotly?.setPlotConfig({scrollZoom: true});  // for the maps drawn from now on
    plot._context._scrollZoom = {cartesian: true};  // and for this one, drawn already
    plot.on("plotly_hover", (event) => hover(plot, event));
    plot.on("plotly_unhover", unhover);
    plot.on("plotly_afterplot", () => redrawOutline(plot));
    plot.addEventListener("mousedown", (event) => startSelection(plot, event), true);
    plot.addEventListener("dblclick", () => {  // Plotly's own double-click never comes in these modes
      if (["lasso", "select"].includes(plot.layout?.dragmode)) {
        window.Plotly.relayout(plot, {"xaxis.autorange": true, "yaxis.autorange": true});
      }
    });
    redrawOutline(plot);
  }

  new MutationObserver(() => document.querySelectorAll(PLOT).forEach(hook))
    .observe(document.documentElement, {childList: true, subtree: true});
})();
</script>
"""


def preload_plotly() -> str:
    """A page script that loads Gradio's plotly.js chunk (4.6 MB) once the page is idle, so that opening
    the Map tab does not wait for it (1.5-2 s on a CPU-only browser); "" if this Gradio has no such
    chunk. It is the module Gradio's own plot imports, by the same URL, so it is loaded only once."""
    import gradio

    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    chunk = next(iter(sorted(assets.glob("PlotlyPlot-*.js"))), None)
    if chunk is None:
        return ""
    return f"""
<script>
(() => {{  // Gradio adds this to the page after its own load event: run at once if the page is loaded
  const load = () => import(new URL("assets/{chunk.name}", document.baseURI).href).catch(() => {{}});
  const idle = () => (window.requestIdleCallback ? requestIdleCallback(load, {{timeout: 3000}}) : load());
  if (document.readyState === "complete") idle(); else addEventListener("load", idle);
}})();
</script>
"""
