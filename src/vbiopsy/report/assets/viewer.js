/* vbiopsy slice viewer: plain JavaScript, no dependencies, works offline.
 * Reads the JSON block #vb-data written by vbiopsy.report.viewer: uint8 volumes (C order, X×Y×Z,
 * canonical RAS) and draws one slice on #vb-canvas in the neurological convention (patient's right
 * on the right, anterior/superior up) with the voxel spacing as aspect ratio. Navigation: slider,
 * arrow keys / PageUp / PageDown on the canvas, mouse wheel over the canvas. Overlays toggle with
 * their checkboxes; the overlays named in payload.captions (several heat maps) are drawn one at a
 * time, picked in #vb-heat, with their caption in #vb-heat-caption. The current slice is written to
 * #vb-slice-label and the picked heat map to data-heat (used by the browser test). */
(function () {
  "use strict";
  var root = document.getElementById("vb-viewer");
  if (!root) { return; }
  var payload = JSON.parse(document.getElementById("vb-data").textContent);
  var canvas = document.getElementById("vb-canvas");
  var ctx = canvas.getContext("2d");
  var slider = document.getElementById("vb-slider");
  var label = document.getElementById("vb-slice-label");
  var imageSelect = document.getElementById("vb-image");
  var planeSelect = document.getElementById("vb-plane");
  var boxes = Array.prototype.slice.call(root.querySelectorAll("input.vb-overlay"));
  var heatSelect = document.getElementById("vb-heat");  // only with several heat maps
  var heatCaption = document.getElementById("vb-heat-caption");
  var captions = payload.captions || {};
  function selectable(name) { return heatSelect !== null && Object.prototype.hasOwnProperty.call(captions, name); }

  function decode(entry) {
    var text = atob(entry.data);
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    return {shape: entry.shape, kind: entry.kind, data: bytes};
  }
  var images = {}, overlays = {};
  Object.keys(payload.images).forEach(function (k) { images[k] = decode(payload.images[k]); });
  Object.keys(payload.overlays).forEach(function (k) { overlays[k] = decode(payload.overlays[k]); });
  var first = images[Object.keys(images)[0]];
  var nx = first.shape[0], ny = first.shape[1], nz = first.shape[2];
  var sp = payload.spacing;
  var position = {axial: Math.floor(nz / 2), coronal: Math.floor(ny / 2), sagittal: Math.floor(nx / 2)};

  // start on the slice with the most labelled / salient voxels of the first overlay, if any
  var firstOverlay = overlays[Object.keys(overlays)[0]];
  if (firstOverlay) {
    var best = -1;
    for (var z = 0; z < nz; z++) {
      var count = 0;
      for (var x = 0; x < nx; x++) { for (var y = 0; y < ny; y++) { if (firstOverlay.data[(x * ny + y) * nz + z] > 0) { count++; } } }
      if (count > best) { best = count; position.axial = z; }
    }
  }

  function geometry(plane) {  // columns, rows, size of the slice axis, physical pixel size
    if (plane === "axial") { return {cols: nx, rows: ny, depth: nz, dx: sp[0], dy: sp[1]}; }
    if (plane === "coronal") { return {cols: nx, rows: nz, depth: ny, dx: sp[0], dy: sp[2]}; }
    return {cols: ny, rows: nz, depth: nx, dx: sp[1], dy: sp[2]};
  }

  function index(plane, col, row, k) {  // voxel index of display (col, row from the bottom) on slice k
    if (plane === "axial") { return (col * ny + row) * nz + k; }
    if (plane === "coronal") { return (col * ny + k) * nz + row; }
    return (k * ny + col) * nz + row;
  }

  function shown(name) {  // picked in the heat-map list, or its checkbox ticked
    if (selectable(name)) { return heatSelect.value === name; }
    return boxes.some(function (b) { return b.checked && b.value === name; });
  }

  function heat(v) {  // 0..255 -> a warm colour ramp
    var t = v / 255;
    return [Math.min(255, 510 * t), Math.max(0, Math.min(255, 510 * (t - 0.35))), Math.max(0, 255 * (2 * t - 1.5))];
  }

  function draw() {
    var plane = planeSelect.value;
    var g = geometry(plane);
    var k = position[plane];
    var scale = 384 / Math.max(g.cols * g.dx, g.rows * g.dy);
    canvas.width = Math.max(1, Math.round(g.cols * g.dx * scale));
    canvas.height = Math.max(1, Math.round(g.rows * g.dy * scale));
    var img = ctx.createImageData(g.cols, g.rows);
    var anatomy = images[imageSelect.value];
    var active = Object.keys(overlays).filter(shown).map(function (name) { return overlays[name]; });
    for (var row = 0; row < g.rows; row++) {
      for (var col = 0; col < g.cols; col++) {
        var v = index(plane, col, row, k);
        var grey = anatomy.data[v];
        var rgb = [grey, grey, grey];
        active.forEach(function (o) {
          var value = o.data[v];
          if (value === 0) { return; }
          var colour = o.kind === "labels" ? (payload.labelColours[String(value)] || [255, 0, 255]) : heat(value);
          var alpha = o.kind === "labels" ? 0.45 : 0.25 + 0.5 * value / 255;
          for (var c = 0; c < 3; c++) { rgb[c] = (1 - alpha) * rgb[c] + alpha * colour[c]; }
        });
        var p = ((g.rows - 1 - row) * g.cols + col) * 4;
        img.data[p] = rgb[0]; img.data[p + 1] = rgb[1]; img.data[p + 2] = rgb[2]; img.data[p + 3] = 255;
      }
    }
    var buffer = document.createElement("canvas");
    buffer.width = g.cols; buffer.height = g.rows;
    buffer.getContext("2d").putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(buffer, 0, 0, canvas.width, canvas.height);
    slider.max = String(g.depth - 1);
    slider.value = String(k);
    label.textContent = plane + " slice " + (k + 1) + " / " + g.depth;
    root.setAttribute("data-slice", String(k));
    root.setAttribute("data-plane", plane);
    if (heatSelect) {
      heatCaption.textContent = selectable(heatSelect.value) ? captions[heatSelect.value] : "No heat map drawn.";
      root.setAttribute("data-heat", heatSelect.value);
    }
  }

  function move(step) {
    var plane = planeSelect.value;
    var depth = geometry(plane).depth;
    position[plane] = Math.max(0, Math.min(depth - 1, position[plane] + step));
    draw();
  }

  slider.addEventListener("input", function () { position[planeSelect.value] = parseInt(slider.value, 10); draw(); });
  canvas.addEventListener("keydown", function (e) {
    var steps = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 5, PageDown: -5};
    if (e.key in steps) { e.preventDefault(); move(steps[e.key]); }
  });
  canvas.addEventListener("wheel", function (e) { e.preventDefault(); move(e.deltaY < 0 ? 1 : -1); }, {passive: false});
  imageSelect.addEventListener("change", draw);
  planeSelect.addEventListener("change", draw);
  boxes.forEach(function (b) { b.addEventListener("change", draw); });
  if (heatSelect) { heatSelect.addEventListener("change", draw); }
  draw();
  root.setAttribute("data-ready", "true");
}());
