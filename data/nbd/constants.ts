/**
 * NBD protocol constants, named as in doc/proto.md of NetworkBlockDevice/nbd
 * ("Values" section and the INFO, WRITE_ZEROES, STRUCTURED_REPLY and BLOCK_STATUS
 * extensions, now part of the main document).
 * @module
 */

// Handshake magics ("Newstyle negotiation").
export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const NBDMAGIC_HI = 0x4e42444d;
export const NBDMAGIC_LO = 0x41474943;
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** Option reply magic ("Fixed newstyle negotiation"): 0x3e889045565a9. */
export const REPLY_MAGIC_HI = 0x0003e889;
export const REPLY_MAGIC_LO = 0x045565a9;

// Handshake flags (server) and client flags ("Handshake flags", "Client flags").
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// Transmission flags ("Transmission flags").
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// Option types ("Option types").
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
/** Extended headers (64-bit lengths); not supported, answered with NBD_REP_ERR_UNSUP. */
export const NBD_OPT_EXTENDED_HEADERS = 11;
/**
 * Ballast's own option, between its nodes only: a node forwarding a client's requests names
 * the forwarder (8-byte random id) and the generation of this connection (u32), so that this
 * server fences the forwarder's older connections (data/forwarder_fences.ts). Any other NBD
 * server answers NBD_REP_ERR_UNSUP, as "Option types" requires for an unknown option.
 */
export const NBD_OPT_BALLAST_FORWARDER = 0x42414c46; // "BALF

// Option reply types ("Option reply types"); errors have bit 31 set.
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

// Information types for NBD_OPT_INFO / NBD_OPT_GO (INFO extension).
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// Request and reply magics ("Request message", "Simple reply message", "Structured reply chunk message").
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;

// Command types ("Request types").
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

// Command flags ("Command flags").
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

// Structured reply flags and types ("Structured reply flags", "Structured reply types").
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// base:allocation flags ("Metadata contexts").
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;
export const BASE_ALLOCATION = "base:allocation";
/** Context id we assign to base:allocation in NBD_REP_META_CONTEXT replies. */
export const BASE_ALLOCATION_ID = 1;

// Error values ("Error values").
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

/** Longest string the spec allows (export names, messages): 4096 bytes ("Conventions"). */
export const MAX_STRING = 4096;
/** Largest option payload we accept during the handshake. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Advertised block sizes (NBD_INFO_BLOCK_SIZE). */
export const MIN_BLOCK_SIZE = 1;
export const PREFERRED_BLOCK_SIZE = 4096;
export const MAX_BLOCK_SIZE = 32 * 1024 * 1024;
/**
 * Largest READ or WRITE accepted. Above the advertised maximum: clients that do not
 * negotiate block sizes (NBD_OPT_EXPORT_NAME, as the reference nbd-client does, or GO
 * without NBD_INFO_BLOCK_SIZE) send up to ~48 MiB in real workloads, as nbdkit and
 * nbd-server accept ("Block size constraints": the server SHOULD tolerate them).
 */
export const MAX_REQUEST_SIZE = 64 * 1024 * 1024;
/** READs and WRITEs above this are streamed between socket and store in pieces. */
export const STREAM_THRESHOLD = 8 * 1024 * 1024;
/** Size of the pieces a streamed READ or WRITE moves at a time. */
export const STREAM_PIECE = 4 * 1024 * 1024;
/** Largest WRITE payload we skip over (to stay in sync) before giving up on a connection. */
export const MAX_DISCARDABLE_PAYLOAD = 0xffffffff;
