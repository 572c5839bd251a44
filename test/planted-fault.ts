// Preloaded into the service by test/lifecycle.test.ts: on SIGUSR2, a throw outside any request, as a bug would.
process.on('SIGUSR2', () => {
  setImmediate(() => {
    throw new Error('planted fault');
  });
});
