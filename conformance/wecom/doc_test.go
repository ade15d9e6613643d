// Package wecom_test pits chatwire's WeCom adapter (adapter/wecom) and its emulator
// (adapter/wecom/wecomtest) against code and data nobody on this project wrote:
//
//   - the official @wecom/crypto npm package (Tencent's WeCom team), driven through node
//     (crypto_test.go): it encrypts and signs callbacks that chatwire must accept and parse
//     exactly as encoding/xml reads the plaintext, and it must decrypt what chatwire and
//     wecomtest encrypt;
//   - silenceper/wechat/v2's work clients against wecomtest (silenceper_test.go);
//   - WeCom's published callback samples, rewritten as fixtures in testdata/ (payloads_test.go).
//
// A missing oracle (node, or the npm package) fails the test with the install command.
package wecom_test
