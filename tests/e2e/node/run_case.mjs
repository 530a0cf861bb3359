// The entry point both client scripts share: run the case named by argv[2] from `cases`,
// print `{case, ...its summary}` as one JSON line; an unknown name exits 2, a failure 1.
export async function runCase(script, cases) {
  const name = process.argv[2];
  if (!cases[name]) {
    console.error(`usage: node ${script} ${Object.keys(cases).join('|')}`);
    process.exit(2);
  }
  try {
    console.log(JSON.stringify({ case: name, ...(await cases[name]()) }));
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
}
