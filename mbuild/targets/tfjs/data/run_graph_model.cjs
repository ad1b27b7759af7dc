// Runs a TensorFlow.js graph model (model.json + shards) in Node on every sample of mbuild's inputs.
// Usage: node run_graph_model.cjs <node_modules> <request.json>; the request names the model folder, the backend,
// the input files (raw little-endian arrays [samples, ...shape]) and where outputs go; a reply JSON is written.
// Node's fetch has no file://, so the model is loaded through an fs-based IO handler.
'use strict';
const fs = require('fs');
const path = require('path');
const {createRequire} = require('module');

const [nodeModules, requestPath] = process.argv.slice(2);
const need = createRequire(path.join(path.resolve(nodeModules), 'noop.js'));
const tf = need('@tensorflow/tfjs-core');
need('@tensorflow/tfjs-backend-cpu');
const converter = need('@tensorflow/tfjs-converter');
const request = JSON.parse(fs.readFileSync(requestPath, 'utf8'));
const ARRAYS = {float32: Float32Array, int32: Int32Array};

function fileHandler(folder) {
  return {
    async load() {
      const model = JSON.parse(fs.readFileSync(path.join(folder, 'model.json'), 'utf8'));
      const specs = [];
      const buffers = [];
      for (const group of model.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(folder, p)));
      }
      const all = Buffer.concat(buffers);
      return {
        modelTopology: model.modelTopology, format: model.format, generatedBy: model.generatedBy,
        convertedBy: model.convertedBy, signature: model.signature, userDefinedMetadata: model.userDefinedMetadata,
        modelInitializer: model.modelInitializer, weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

async function main() {
  if (request.backend === 'wasm') need('@tensorflow/tfjs-backend-wasm');
  if (!(await tf.setBackend(request.backend))) throw new Error(`tfjs backend ${request.backend} did not initialize`);
  await tf.ready();
  tf.setBackend(request.backend);
  const model = await converter.loadGraphModel(fileHandler(request.model));
  const inputs = {};
  for (const spec of request.inputs) {
    const raw = fs.readFileSync(spec.file);
    const Arr = ARRAYS[spec.dtype];
    inputs[spec.name] = {spec, data: new Arr(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength))};
  }
  const outputs = Object.fromEntries(request.outputs.map((name) => [name, []]));
  const shapes = {};
  // execute() unless the graph has control flow or dynamic shapes (then it throws and executeAsync is needed)
  let dynamic = false;
  // (that first run also warms the backend up: it is not timed)
  const zeros = Object.fromEntries(Object.entries(inputs).map(([n, {spec}]) => [n, tf.zeros(spec.shape, spec.dtype)]));
  try { tf.dispose(model.execute(zeros, request.outputs)); } catch (e) { dynamic = true; }
  tf.dispose(Object.values(zeros));
  const latencies = [];
  for (let i = 0; i < request.samples; i++) {
    const feed = {};
    for (const [name, {spec, data}] of Object.entries(inputs)) {
      const size = spec.shape.reduce((a, b) => a * b, 1);
      feed[name] = tf.tensor(data.subarray(i * size, (i + 1) * size), spec.shape, spec.dtype);
    }
    const start = process.hrtime.bigint();
    let result = dynamic ? await model.executeAsync(feed, request.outputs) : model.execute(feed, request.outputs);
    if (!Array.isArray(result)) result = [result];
    const values = await Promise.all(result.map((t) => t.data()));
    latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
    request.outputs.forEach((name, k) => {
      shapes[name] = result[k].shape;
      outputs[name].push(Float32Array.from(values[k]));
    });
    tf.dispose([...Object.values(feed), ...result]);
  }
  const files = {};
  for (const [k, [name, chunks]] of Object.entries(outputs).entries()) {
    const file = path.join(request.out_dir, `out${k}.f32`);
    const total = chunks.reduce((a, c) => a + c.length, 0);
    const joined = new Float32Array(total);
    let at = 0;
    for (const c of chunks) { joined.set(c, at); at += c.length; }
    fs.writeFileSync(file, Buffer.from(joined.buffer));
    files[name] = file;
  }
  const reply = {files, shapes, latency_ms: latencies, backend: tf.getBackend(), tfjs: tf.version_core,
                 signature_outputs: Object.keys((model.modelSignature || {}).outputs || {})};
  fs.writeFileSync(request.reply, JSON.stringify(reply));
}

main().catch((e) => { process.stderr.write(`tfjs: ${e && e.message ? e.message : e}\n`); process.exit(1); });
