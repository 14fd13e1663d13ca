// Build one JavaScript analyzer into a component:
//   node plugins/js/componentize.mjs <source.js> <wit dir> <out.wasm>
import { componentize } from '@bytecodealliance/componentize-js';
import { readFile, writeFile } from 'node:fs/promises';

const [source, witPath, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: source,
  witPath,
  worldName: 'analyzer',
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
console.error(`built ${out} (${component.length} bytes)`);
