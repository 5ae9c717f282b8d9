// The poserft playground: a description or an image in, the pose drawn as a rotatable skeleton,
// the response text, and the export files as downloads. Plain JS, no library.
"use strict";

const PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21];
const SIDE = "clrclrclrclrclrclrlrlrlr"; // per joint: l(eft), r(ight), c(entre), SMPL order
const RGB = { l: [255, 150, 30], r: [40, 150, 255], c: [60, 220, 90] };
const EXPORTS = ["npz", "json", "png", "bvh"];
const TYPES = { npz: "application/octet-stream", json: "application/json", png: "image/png", bvh: "text/plain" };

const $ = (id) => document.getElementById(id);
const state = { joints: null, yaw: 0.6, pitch: 0.2, busy: false, last: null, urls: [] };
window.poserft = state; // for the browser test and the curious

// ---- token, kept in this browser only ----
$("token").value = localStorage.getItem("poserft-token") || "";
$("token").addEventListener("input", () => localStorage.setItem("poserft-token", $("token").value.trim()));

// ---- requests ----
async function call(route, body) {
  if (state.busy) return;
  state.busy = true;
  setStatus("generating...");
  $("generate").disabled = true;
  try {
    const headers = { "Content-Type": "application/json" };
    const token = $("token").value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch("/v1/" + route, { method: "POST", headers, body: JSON.stringify({ ...body, exports: EXPORTS }) });
    const data = await res.json().catch(() => ({ error: "the server answered " + res.status + " without JSON" }));
    if (!res.ok) throw new Error(data.error || "HTTP " + res.status);
    show(data.results[0]);
    setStatus("");
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    state.busy = false;
    $("generate").disabled = false;
  }
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

$("text-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("text").value.trim();
  if (!text) return setStatus("type a description first", true);
  call("text2pose", { text });
});

function sendImage(file) {
  if (!file) return;
  if (!/^image\/(png|jpeg)$/.test(file.type)) return setStatus("the image must be PNG or JPEG", true);
  const reader = new FileReader();
  reader.onload = () => call("image2pose", { image: reader.result });
  reader.readAsDataURL(file);
}
const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); sendImage(ev.dataTransfer.files[0]); });
$("file").addEventListener("change", (ev) => sendImage(ev.target.files[0]));

// ---- results ----
function show(result) {
  state.last = result;
  $("response").textContent = result.text;
  state.urls.forEach(URL.revokeObjectURL);
  state.urls = [];
  const list = $("downloads");
  list.textContent = "";
  const pose = result.poses[0];
  state.joints = pose ? pose.joints_m : null;
  if (!pose) list.textContent = "no pose in this response";
  for (const [name, b64] of Object.entries((pose && pose.files) || {})) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const url = URL.createObjectURL(new Blob([bytes], { type: TYPES[name.split(".").pop()] }));
    state.urls.push(url);
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    a.textContent = name;
    const li = document.createElement("li");
    li.appendChild(a);
    list.appendChild(li);
  }
  draw();
}

// ---- the skeleton: orthographic camera orbiting the body (y up), drag to rotate ----
const canvas = $("skeleton");
const ctx = canvas.getContext("2d");

function project(p) {
  const cy = Math.cos(state.yaw), sy = Math.sin(state.yaw), cp = Math.cos(state.pitch), sp = Math.sin(state.pitch);
  const x = cy * p[0] - sy * p[2];
  const z1 = sy * p[0] + cy * p[2];
  const y = cp * p[1] - sp * z1;
  const depth = sp * p[1] + cp * z1; // towards the viewer
  return [x, y, depth];
}

function draw() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  state.drawnBones = 0;
  if (!state.joints) return;
  const pts = state.joints.map(project);
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  const cx = (Math.min(...xs) + Math.max(...xs)) / 2, cyy = (Math.min(...ys) + Math.max(...ys)) / 2;
  const scale = canvas.height / 2.2; // 2.2 m across the canvas, as the renderer frames bodies
  const uv = pts.map((p) => [canvas.width / 2 + (p[0] - cx) * scale, canvas.height / 2 - (p[1] - cyy) * scale, p[2]]);
  const bones = [];
  for (let j = 1; j < PARENTS.length; j++) bones.push([PARENTS[j], j, (uv[PARENTS[j]][2] + uv[j][2]) / 2]);
  bones.sort((a, b) => a[2] - b[2]); // far to near
  const depths = uv.map((p) => p[2]);
  const dmin = Math.min(...depths), dmax = Math.max(...depths) + 1e-6;
  for (const [a, b, d] of bones) {
    const near = (d - dmin) / (dmax - dmin); // 0 far .. 1 near: brighter and thicker
    const [r, g, bl] = RGB[SIDE[b]].map((v) => Math.round(v * (0.55 + 0.45 * near)));
    ctx.strokeStyle = `rgb(${r},${g},${bl})`;
    ctx.lineWidth = 3 + 3 * near;
    ctx.lineCap = "round";
    ctx.beginPath();
    ctx.moveTo(uv[a][0], uv[a][1]);
    ctx.lineTo(uv[b][0], uv[b][1]);
    ctx.stroke();
    state.drawnBones++;
  }
  ctx.strokeStyle = "rgb(60,220,90)";
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.arc(uv[15][0], uv[15][1], 0.09 * scale, 0, 2 * Math.PI);
  ctx.stroke();
}

let dragFrom = null;
canvas.addEventListener("pointerdown", (ev) => { dragFrom = [ev.clientX, ev.clientY]; canvas.setPointerCapture(ev.pointerId); });
canvas.addEventListener("pointerup", () => { dragFrom = null; });
canvas.addEventListener("pointermove", (ev) => {
  if (!dragFrom) return;
  state.yaw += (ev.clientX - dragFrom[0]) * 0.01;
  state.pitch = Math.max(-1.5, Math.min(1.5, state.pitch + (ev.clientY - dragFrom[1]) * 0.01));
  dragFrom = [ev.clientX, ev.clientY];
  draw();
});
draw();
