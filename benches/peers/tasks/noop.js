// The no-op job the throughput runs drain: the peer's counterpart of syncline's demo.noop.
module.exports = async () => {};
