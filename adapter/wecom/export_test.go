package wecom

// Internals for the differential tests in package wecom_test.
var (
	ScanXML      = scanXML
	ParseXMLSlow = parseXMLSlow
	AppendJSON   = appendJSON
	ErrSlowPath  = errSlowPath
)
