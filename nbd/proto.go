package nbd

import (
	"encoding/binary"

	"github.com/pojntfx/go-nbd/pkg/protocol"
)

// Wire constants. Where go-nbd's protocol package has a value we use it; the
// rest are taken from the NBD protocol spec (NetworkBlockDevice/nbd
// doc/proto.md), which go-nbd v0.3.2 does not cover. Beware: old revisions
// of that spec numbered the meta-context options 10 and 11; qemu, libnbd
// and nbdkit use 9 and 10 (11 is now NBD_OPT_EXTENDED_HEADERS).
const (
	magicInit        = protocol.NEGOTIATION_MAGIC_OLDSTYLE // "NBDMAGIC"
	magicOption      = protocol.NEGOTIATION_MAGIC_OPTION   // "IHAVEOPT"
	magicOptReply    = protocol.NEGOTIATION_MAGIC_REPLY
	magicRequest     = protocol.TRANSMISSION_MAGIC_REQUEST
	magicSimpleReply = protocol.TRANSMISSION_MAGIC_REPLY
	magicStructured  = uint32(0x668e33ef)

	// Handshake flags (server) and client flags.
	flagFixedNewstyle   = protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE
	flagNoZeroes        = uint16(1 << 1)
	clientFixedNewstyle = uint32(1 << 0)
	clientNoZeroes      = uint32(1 << 1)

	// Options.
	optExportName      = uint32(1)
	optAbort           = protocol.NEGOTIATION_ID_OPTION_ABORT
	optList            = protocol.NEGOTIATION_ID_OPTION_LIST
	optStartTLS        = uint32(5)
	optInfo            = protocol.NEGOTIATION_ID_OPTION_INFO
	optGo              = protocol.NEGOTIATION_ID_OPTION_GO
	optStructuredReply = uint32(8)
	optListMetaContext = uint32(9)
	optSetMetaContext  = uint32(10)

	// Option reply types.
	repAck         = protocol.NEGOTIATION_TYPE_REPLY_ACK
	repServer      = protocol.NEGOTIATION_TYPE_REPLY_SERVER
	repInfo        = protocol.NEGOTIATION_TYPE_REPLY_INFO
	repMetaContext = uint32(4)
	repErrUnsup    = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED
	repErrPolicy   = uint32(2 | 1<<31)
	repErrInvalid  = uint32(3 | 1<<31)
	repErrUnknown  = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
	repErrShutdown = uint32(7 | 1<<31)
	repErrTooBig   = uint32(9 | 1<<31)

	// NBD_INFO_* ids in NBD_REP_INFO replies.
	infoExport      = protocol.NEGOTIATION_TYPE_INFO_EXPORT
	infoName        = protocol.NEGOTIATION_TYPE_INFO_NAME
	infoDescription = protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION
	infoBlockSize   = protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE

	// Transmission flags.
	flagHasFlags     = protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS
	flagReadOnly     = uint16(1 << 1)
	flagSendFlush    = uint16(1 << 2)
	flagSendDF       = uint16(1 << 7)
	flagCanMultiConn = protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN

	// Commands.
	cmdRead        = protocol.TRANSMISSION_TYPE_REQUEST_READ
	cmdWrite       = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	cmdDisc        = protocol.TRANSMISSION_TYPE_REQUEST_DISC
	cmdFlush       = uint16(3)
	cmdTrim        = uint16(4)
	cmdCache       = uint16(5)
	cmdWriteZeroes = uint16(6)
	cmdBlockStatus = uint16(7)

	// Command flags.
	cmdFlagFUA    = uint16(1 << 0)
	cmdFlagNoHole = uint16(1 << 1)
	cmdFlagDF     = uint16(1 << 2)
	cmdFlagReqOne = uint16(1 << 3)

	// Structured reply flags and chunk types.
	replyFlagDone         = uint16(1 << 0)
	replyTypeNone         = uint16(0)
	replyTypeOffsetData   = uint16(1)
	replyTypeOffsetHole   = uint16(2)
	replyTypeBlockStatus  = uint16(5)
	replyTypeError        = uint16(1<<15 + 1)
	replyTypeErrorOffset  = uint16(1<<15 + 2)
	structuredHeaderBytes = 20
	simpleHeaderBytes     = 16
	requestBytes          = 28

	// Error values.
	errPerm      = protocol.TRANSMISSION_ERROR_EPERM
	errIO        = uint32(5)
	errInval     = protocol.TRANSMISSION_ERROR_EINVAL
	errOverflow  = uint32(75)
	errShutdown  = uint32(108)
	stateHole    = uint32(1 << 0)
	stateZero    = uint32(1 << 1)
	metaBaseName = "base:allocation"
)

// Limits we advertise and enforce.
const (
	minBlockSize       = 1
	preferredBlockSize = 64 << 10
	maxBlockSize       = 32 << 20 // largest READ/WRITE payload we accept
	maxOptionLen       = 64 << 10 // larger option data is refused unread
	maxStringLen       = 4096     // spec: strings MUST be no longer than 4096 bytes
	metaContextID      = 1        // the id we hand out for base:allocation
)

var be = binary.BigEndian

// request is one transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32
}

// parseRequest decodes a 28-byte request header.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestBytes {
		return request{}, errShortRequest
	}
	if m := be.Uint32(b[0:4]); m != magicRequest {
		return request{}, errBadMagic
	}
	return request{
		flags:  be.Uint16(b[4:6]),
		typ:    be.Uint16(b[6:8]),
		handle: be.Uint64(b[8:16]),
		offset: be.Uint64(b[16:24]),
		length: be.Uint32(b[24:28]),
	}, nil
}

// appendRequest encodes r (used by tests and the fuzz seeds).
func appendRequest(b []byte, r request) []byte {
	b = be.AppendUint32(b, magicRequest)
	b = be.AppendUint16(b, r.flags)
	b = be.AppendUint16(b, r.typ)
	b = be.AppendUint64(b, r.handle)
	b = be.AppendUint64(b, r.offset)
	return be.AppendUint32(b, r.length)
}

func appendSimpleReply(b []byte, handle uint64, errno uint32) []byte {
	b = be.AppendUint32(b, magicSimpleReply)
	b = be.AppendUint32(b, errno)
	return be.AppendUint64(b, handle)
}

func appendChunkHeader(b []byte, flags, typ uint16, handle uint64, length uint32) []byte {
	b = be.AppendUint32(b, magicStructured)
	b = be.AppendUint16(b, flags)
	b = be.AppendUint16(b, typ)
	b = be.AppendUint64(b, handle)
	return be.AppendUint32(b, length)
}

// appendErrorChunk encodes an NBD_REPLY_TYPE_ERROR chunk, the final one.
func appendErrorChunk(b []byte, handle uint64, errno uint32, msg string) []byte {
	if len(msg) > maxStringLen {
		msg = msg[:maxStringLen]
	}
	b = appendChunkHeader(b, replyFlagDone, replyTypeError, handle, uint32(6+len(msg)))
	b = be.AppendUint32(b, errno)
	b = be.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

func appendOptReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = be.AppendUint64(b, magicOptReply)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}
