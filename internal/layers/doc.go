// Package layers has no code of its own: its test pins the import rules of
// DESIGN.md (config -> agent -> cluster -> controllers -> providers -> OS), so
// that the shape cannot erode one convenient import at a time. A new package
// must be given a layer in layers_test.go before the test passes.
package layers
