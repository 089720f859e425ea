// Validates custom resources that kubernetes-validate has no schema for, with validators generated
// from the operators' own CRDs (@kubernetes-models). Usage: node validate-crds.mjs FILE...
// Run from a directory whose node_modules holds js-yaml and @kubernetes-models/prometheus-operator.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = join(process.cwd(), "node_modules");
const yaml = createRequire(`${modules}/`)("js-yaml");
// The package only exports ES modules; import its file directly.
const prometheusOperator = join(modules, "@kubernetes-models/prometheus-operator");
const { ServiceMonitor } = await import(
  pathToFileURL(join(prometheusOperator, "monitoring.coreos.com/v1/index.js")).href
);

const validators = { "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor };
let failed = false;
for (const file of process.argv.slice(2)) {
  const doc = yaml.load(readFileSync(file, "utf8"));
  const Model = validators[`${doc.apiVersion}/${doc.kind}`];
  if (!Model) {
    console.log(`${file}: no validator for ${doc.apiVersion} ${doc.kind}`);
    failed = true;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${file}: ${doc.kind} valid`);
  } catch (error) {
    console.log(`${file}: ${doc.kind} invalid: ${error.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
