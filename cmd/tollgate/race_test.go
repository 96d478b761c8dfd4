//go:build race

package main

// raceEnabled says the test binary, and so the tollgate binary it builds,
// runs with the race detector.
const raceEnabled = true
