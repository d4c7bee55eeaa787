package nbd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"
)

// session is what the handshake agreed on.
type session struct {
	export     Export
	structured bool // NBD_OPT_STRUCTURED_REPLY acknowledged
	meta       bool // base:allocation selected for this export
}

// negotiator runs the fixed newstyle handshake on one connection. It knows
// nothing about sockets, so tests and fuzzers drive it with plain bytes.
type negotiator struct {
	r       *bufio.Reader // kept by the caller: it may hold transmission bytes
	w       *bufio.Writer
	exports Exports

	noZeroes   bool
	structured bool
	metaOn     bool   // base:allocation selected ...
	metaExport string // ... for this export name

	// The last lookup: clients name the same export in several options
	// (qemu: SET_META_CONTEXT, then GO), and a lookup may take most of the
	// handshake's bound when a backend hangs.
	looked    bool
	lookedFor string
	lookedExp Export
	lookedErr error
}

// lookup resolves name once per handshake for consecutive options.
func (n *negotiator) lookup(name string) (Export, error) {
	if !n.looked || n.lookedFor != name {
		n.lookedExp, n.lookedErr = n.exports.Lookup(name)
		n.looked, n.lookedFor = true, name
	}
	return n.lookedExp, n.lookedErr
}

// transmissionFlags are the flags we advertise for an export in the current
// state of the negotiation.
func (n *negotiator) transmissionFlags() uint16 {
	f := flagHasFlags | flagReadOnly | flagSendFlush | flagCanMultiConn
	if n.structured {
		// DF is only meaningful (and allowed) with structured replies.
		f |= flagSendDF
	}
	return f
}

// negotiate greets the client and haggles options until the client picks an
// export (NBD_OPT_GO / NBD_OPT_EXPORT_NAME), aborts, or breaks the protocol.
// The caller bounds the whole exchange with a deadline.
func negotiate(r *bufio.Reader, w io.Writer, exports Exports) (session, error) {
	n := &negotiator{r: r, w: bufio.NewWriterSize(w, 4096), exports: exports}
	return n.run()
}

func (n *negotiator) run() (session, error) {
	var greet []byte
	greet = be.AppendUint64(greet, magicInit)
	greet = be.AppendUint64(greet, magicOption)
	greet = be.AppendUint16(greet, flagFixedNewstyle|flagNoZeroes)
	if _, err := n.w.Write(greet); err != nil {
		return session{}, fmt.Errorf("nbd: handshake: greet: %w", err)
	}
	if err := n.w.Flush(); err != nil {
		return session{}, fmt.Errorf("nbd: handshake: greet: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(n.r, cf[:]); err != nil {
		return session{}, fmt.Errorf("nbd: handshake: client flags: %w", err)
	}
	flags := be.Uint32(cf[:])
	if flags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return session{}, fmt.Errorf("nbd: handshake: client flags %#x: %w", flags, errBadClientFlags)
	}
	n.noZeroes = flags&clientNoZeroes != 0

	var hdr [16]byte
	for {
		if _, err := io.ReadFull(n.r, hdr[:]); err != nil {
			return session{}, fmt.Errorf("nbd: handshake: option header: %w", err)
		}
		if m := be.Uint64(hdr[0:8]); m != magicOption {
			return session{}, fmt.Errorf("nbd: handshake: option magic %#x: %w", m, errBadMagic)
		}
		opt, length := be.Uint32(hdr[8:12]), be.Uint32(hdr[12:16])
		if length > maxOptionLen {
			// Skipping gigabytes of option data would let one client tie
			// us up, so refuse and hang up.
			_ = n.reply(opt, repErrTooBig, []byte("option data too large"))
			_ = n.w.Flush()
			return session{}, fmt.Errorf("nbd: handshake: option %d of %d bytes: %w", opt, length, errOptionTooBig)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(n.r, data); err != nil {
			return session{}, fmt.Errorf("nbd: handshake: option %d data: %w", opt, err)
		}
		sess, done, err := n.option(opt, data)
		if ferr := n.w.Flush(); err == nil && ferr != nil {
			err = fmt.Errorf("nbd: handshake: reply to option %d: %w", opt, ferr)
		}
		if err != nil || done {
			return sess, err
		}
	}
}

// option handles one option. done means the handshake is over (transmission
// starts with sess).
func (n *negotiator) option(opt uint32, data []byte) (sess session, done bool, err error) {
	switch opt {
	case optExportName:
		name := string(data)
		if err := checkString(name); err != nil {
			return session{}, false, fmt.Errorf("nbd: handshake: export name: %w", err)
		}
		exp, err := n.lookup(name)
		if err != nil {
			// This option cannot carry an error: the spec says hang up.
			return session{}, false, fmt.Errorf("nbd: handshake: %s", unknownText(name, err))
		}
		var b []byte
		b = be.AppendUint64(b, uint64(exp.Source.Size()))
		b = be.AppendUint16(b, n.transmissionFlags())
		if !n.noZeroes {
			b = append(b, make([]byte, 124)...)
		}
		if _, err := n.w.Write(b); err != nil {
			return session{}, false, fmt.Errorf("nbd: handshake: export name reply: %w", err)
		}
		return n.session(name, exp), true, nil

	case optAbort:
		_ = n.reply(opt, repAck, nil)
		return session{}, false, errAborted

	case optList:
		if len(data) != 0 {
			return session{}, false, n.reply(opt, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		}
		for _, e := range n.exports.List() {
			var b []byte
			b = be.AppendUint32(b, uint32(len(e.Name)))
			b = append(b, e.Name...)
			b = append(b, clip(e.Description)...)
			if err := n.reply(opt, repServer, b); err != nil {
				return session{}, false, err
			}
		}
		return session{}, false, n.reply(opt, repAck, nil)

	case optInfo, optGo:
		req, perr := parseInfoRequest(data)
		if perr != nil {
			return session{}, false, n.reply(opt, repErrInvalid, []byte(perr.Error()))
		}
		exp, err := n.lookup(req.name)
		if err != nil {
			return session{}, false, n.reply(opt, repErrUnknown, []byte(unknownText(req.name, err)))
		}
		if err := n.sendInfo(opt, req, exp); err != nil {
			return session{}, false, err
		}
		if err := n.reply(opt, repAck, nil); err != nil {
			return session{}, false, err
		}
		if opt == optInfo {
			return session{}, false, nil
		}
		return n.session(req.name, exp), true, nil

	case optStructuredReply:
		if len(data) != 0 {
			return session{}, false, n.reply(opt, repErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		n.structured = true
		return session{}, false, n.reply(opt, repAck, nil)

	case optListMetaContext, optSetMetaContext:
		return session{}, false, n.metaContext(opt, data)

	default: // includes STARTTLS (we run without TLS) and EXTENDED_HEADERS
		return session{}, false, n.reply(opt, repErrUnsup, nil)
	}
}

// session fixes the negotiated state for exp, chosen by name. Meta contexts
// were selected for a named export; choosing another one drops them.
func (n *negotiator) session(name string, exp Export) session {
	return session{
		export:     exp,
		structured: n.structured,
		meta:       n.metaOn && n.metaExport == name,
	}
}

func (n *negotiator) sendInfo(opt uint32, req infoRequest, exp Export) error {
	var b []byte
	b = be.AppendUint16(b, infoExport)
	b = be.AppendUint64(b, uint64(exp.Source.Size()))
	b = be.AppendUint16(b, n.transmissionFlags())
	if err := n.reply(opt, repInfo, b); err != nil {
		return err
	}
	if req.wants(infoName) {
		b = be.AppendUint16(b[:0], infoName)
		b = append(b, exp.Name...)
		if err := n.reply(opt, repInfo, b); err != nil {
			return err
		}
	}
	if req.wants(infoDescription) && exp.Description != "" {
		b = be.AppendUint16(b[:0], infoDescription)
		b = append(b, clip(exp.Description)...)
		if err := n.reply(opt, repInfo, b); err != nil {
			return err
		}
	}
	// Sent even when not asked for: the spec allows it, and it tells
	// clients that any alignment works and how large a request may be.
	b = be.AppendUint16(b[:0], infoBlockSize)
	b = be.AppendUint32(b, minBlockSize)
	b = be.AppendUint32(b, preferredBlockSize)
	b = be.AppendUint32(b, maxBlockSize)
	return n.reply(opt, repInfo, b)
}

func (n *negotiator) metaContext(opt uint32, data []byte) error {
	if !n.structured {
		return n.reply(opt, repErrInvalid, []byte("negotiate structured replies first"))
	}
	req, err := parseMetaRequest(data)
	if err != nil {
		return n.reply(opt, repErrInvalid, []byte(err.Error()))
	}
	if _, err := n.lookup(req.name); err != nil {
		return n.reply(opt, repErrUnknown, []byte(unknownText(req.name, err)))
	}
	list := opt == optListMetaContext
	match := list && len(req.queries) == 0
	for _, q := range req.queries {
		match = match || metaMatches(q, list)
	}
	if !list {
		// SET replaces whatever was selected before.
		n.metaOn, n.metaExport = match, req.name
	}
	if match {
		id := uint32(0) // LIST: the id is reserved and SHOULD be zero
		if !list {
			id = metaContextID
		}
		b := be.AppendUint32(nil, id)
		b = append(b, metaBaseName...)
		if err := n.reply(opt, repMetaContext, b); err != nil {
			return err
		}
	}
	return n.reply(opt, repAck, nil)
}

// reply queues one option reply; the caller flushes.
func (n *negotiator) reply(opt, typ uint32, data []byte) error {
	if _, err := n.w.Write(appendOptReply(nil, opt, typ, data)); err != nil {
		return fmt.Errorf("nbd: handshake: reply to option %d: %w", opt, err)
	}
	return nil
}

// unknownText is the message of NBD_REP_ERR_UNKNOWN for name, which
// Lookup did not resolve with err: the cause is added unless the name is
// simply not exported.
func unknownText(name string, err error) string {
	s := "no export named " + strconv.Quote(name)
	if !errors.Is(err, ErrUnknownExport) {
		s += ": " + err.Error()
	}
	return clip(s)
}

// clip cuts s to the spec's string limit without splitting a rune.
func clip(s string) string {
	if len(s) <= maxStringLen {
		return s
	}
	cut := maxStringLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// isAbort tells a clean NBD_OPT_ABORT from a failure.
func isAbort(err error) bool { return errors.Is(err, errAborted) }
