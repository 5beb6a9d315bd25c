package bench

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// ReferenceHandler is the HTTP framework answering an empty JSON object to a
// form POST, with none of the ledger's work: the reference the refresh rate is
// compared with in "sessionledger bench".
func ReferenceHandler() http.Handler {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.POST("/oauth2/token", func(c echo.Context) error {
		if _, err := c.FormParams(); err != nil {
			return err
		}
		return c.JSONBlob(http.StatusOK, []byte("{}"))
	})
	return e
}
