// The integer options of the bench and the callgrind script: `--name N`, N a whole number >= 1.
export function integerOption(args: readonly string[], name: string, fallback: number): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  if (!Number.isInteger(value) || value < 1) throw new Error(`The value of "${name}" must be an integer >= 1. Received ${args[at + 1]}`);
  return value;
}
