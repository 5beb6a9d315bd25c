package transport

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/sessionledger/sessionledger/keyring"
)

// KeyManager is what the admin API needs of key rotation (keyring.Manager).
type KeyManager interface {
	Status() []keyring.Status
	Rotate(ctx context.Context, kind string) (keyring.Record, error)
}

var _ KeyManager = (*keyring.Manager)(nil)

// listKeys answers GET /v1/keys: every generation of every kind of key,
// with its state and schedule; never a secret.
func (s *Server) listKeys(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]any{"keys": s.cfg.Keys.Status()})
}

// rotateKey answers POST /v1/keys/{kind}/rotate: the next key of that kind
// is made now and takes over after the pre-publication time (signing) or
// the propagation time (the others).
func (s *Server) rotateKey(c echo.Context) error {
	rec, err := s.cfg.Keys.Rotate(c.Request().Context(), c.Param("kind"))
	switch {
	case errors.Is(err, keyring.ErrUnknownKind):
		return writeProblem(c, http.StatusNotFound, "No such kind of key", "the kinds of keys are signing, token, tag and checkpoint")
	case errors.Is(err, keyring.ErrRotationRace):
		return writeProblem(c, http.StatusConflict, "Rotation raced", "another rotation of this kind was made at the same moment; list the keys (GET /v1/keys) and rotate again if needed")
	case err != nil:
		return err
	}
	for _, st := range s.cfg.Keys.Status() {
		if st.Kind == rec.Kind && st.Generation == rec.Gen {
			return c.JSON(http.StatusCreated, st)
		}
	}
	return c.JSON(http.StatusCreated, keyring.Status{Kind: rec.Kind, Generation: rec.Gen, ID: rec.ID, Alg: rec.Alg, State: "pending", Created: rec.Created, ActiveFrom: rec.ActivateAt})
}
