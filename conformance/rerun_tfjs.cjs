// rerun.py's own TensorFlow.js runner (not mbuild's): a graph model on the wasm backend in Node.
// Usage: node rerun_tfjs.cjs <node_modules> <job.json>. The job names the model folder, the inputs (raw
// little-endian float32 files, [samples, ...shape]) and the signature outputs to fetch; the outputs are written
// as raw float32 files next to the job, and done.json lists their shapes and the backend that ran them.
'use strict';
const fs = require('fs');
const path = require('path');
const {createRequire} = require('module');

const [modules, jobFile] = process.argv.slice(2);
const load = createRequire(path.join(path.resolve(modules), 'x.js'));
const tf = load('@tensorflow/tfjs-core');
const {loadGraphModel} = load('@tensorflow/tfjs-converter');
load('@tensorflow/tfjs-backend-wasm');
const job = JSON.parse(fs.readFileSync(jobFile, 'utf8'));

function artifacts(folder) {
  // the model.json and its shards as in-memory artifacts (Node's fetch cannot read file:// URLs)
  const json = JSON.parse(fs.readFileSync(path.join(folder, 'model.json'), 'utf8'));
  const specs = json.weightsManifest.flatMap((g) => g.weights);
  const bytes = Buffer.concat(json.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(folder, p)))));
  const weightData = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  return tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs: specs, weightData,
                           signature: json.signature, modelInitializer: json.modelInitializer,
                           userDefinedMetadata: json.userDefinedMetadata, format: json.format});
}

async function main() {
  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialize');
  await tf.ready();
  const model = await loadGraphModel(artifacts(job.model));
  const feeds = job.inputs.map((e) => {
    const raw = fs.readFileSync(e.file);
    return {...e, data: new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4)};
  });
  const got = job.outputs.map(() => []);
  const shapes = {};
  for (let i = 0; i < job.samples; i++) {
    const feed = {};
    for (const e of feeds) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      feed[e.key] = tf.tensor(e.data.slice(i * n, (i + 1) * n), e.shape, 'float32');
    }
    let out = await model.executeAsync(feed, job.outputs);
    out = Array.isArray(out) ? out : [out];
    for (let k = 0; k < out.length; k++) {
      shapes[job.outputs[k]] = out[k].shape;
      got[k].push(await out[k].data());
    }
    tf.dispose([...Object.values(feed), ...out]);
  }
  const files = {};
  job.outputs.forEach((key, k) => {
    files[key] = path.join(path.dirname(jobFile), `result${k}.f32`);
    const flat = Float32Array.from(got[k].flatMap((a) => Array.from(a)));
    fs.writeFileSync(files[key], Buffer.from(flat.buffer));
  });
  fs.writeFileSync(path.join(path.dirname(jobFile), 'done.json'),
                   JSON.stringify({files, shapes, backend: tf.getBackend(), version: tf.version_core}));
}

main().catch((e) => { console.error(`rerun tfjs: ${e && e.stack ? e.stack : e}`); process.exit(1); });
