// The part of simdjson's DOM parser Rust calls: parse one padded document, hand out
// its tape and string buffer. No exceptions cross into Rust.
#include "simdjson.h"

#include <cstddef>
#include <cstdint>
#include <new>

extern "C" {

void *simdjson_tape_new(size_t capacity, size_t max_depth) {
  auto *parser = new (std::nothrow) simdjson::dom::parser();
  if (parser == nullptr) {
    return nullptr;
  }
  if (parser->allocate(capacity, max_depth) != simdjson::SUCCESS) {
    delete parser;
    return nullptr;
  }
  return parser;
}

void simdjson_tape_free(void *parser) {
  delete static_cast<simdjson::dom::parser *>(parser);
}

// Parses `len` bytes at `json`, which must be followed by SIMDJSON_PADDING readable
// bytes. 0 and the tape and string buffer, or simdjson's error code.
int simdjson_tape_parse(void *raw, const uint8_t *json, size_t len,
                        const uint64_t **tape, const uint8_t **strings) {
  auto &parser = *static_cast<simdjson::dom::parser *>(raw);
  simdjson::dom::element root;
  auto error = parser.parse(json, len, false).get(root);
  if (error != simdjson::SUCCESS) {
    return static_cast<int>(error);
  }
  *tape = parser.doc.tape.get();
  *strings = parser.doc.string_buf.get();
  return 0;
}

size_t simdjson_tape_padding() { return simdjson::SIMDJSON_PADDING; }

} // extern "C"
