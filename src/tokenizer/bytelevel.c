/* bytelevel.c - GPT-2 byte <-> unicode map (openai/gpt-2 encoder.py bytes_to_unicode): printable
 * bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF map to themselves; the other 68 bytes (0x00..0x20,
 * 0x7F..0xA0, 0xAD) map, in order, to U+0100.. (space -> U+0120 'Ġ', newline -> U+010A 'Ċ'). */
#include "tokenizer/tok_internal.h"

int32_t st__byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 256 + b;
    if (b >= 0x7F && b <= 0xA0) return 256 + 33 + (b - 0x7F);
    if (b == 0xAD) return 256 + 67;
    return b;
}

int st__cp_to_byte(int32_t cp) {
    if (cp < 0) return -1;
    if (cp < 256) return (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) ? -1 : cp;
    int n = cp - 256;
    if (n < 33) return n;
    if (n < 67) return 0x7F + (n - 33);
    if (n == 67) return 0xAD;
    return -1;
}
