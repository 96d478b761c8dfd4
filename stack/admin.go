package stack

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// adminPassword returns the admin password: the given one, or the one in
// <dataDir>/admin-password, which is generated (readable by the owner
// only) when the file does not exist yet. file is "" for a given
// password.
func adminPassword(dataDir, given string) (password, file string, err error) {
	if given != "" {
		return given, "", nil
	}
	file = filepath.Join(dataDir, AdminPasswordFile)
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		// An editor or echo adds a newline that is not part of it.
		password = strings.TrimRight(string(data), "\r\n")
		if password == "" {
			return "", "", fmt.Errorf("admin password file %s is empty; delete it to have a new password generated", file)
		}
		return password, file, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", "", fmt.Errorf("read admin password: %w", err)
	}
	// 26 base32 characters, 130 bits: no dictionary, no throttling
	// question.
	password = rand.Text()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("create admin password file: %w", err)
	}
	_, err = f.WriteString(password + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(file)
		return "", "", fmt.Errorf("write admin password file: %w", err)
	}
	return password, file, nil
}
